#!/usr/bin/env bash
# Build the JVM client: generate Java from proto/ with protoc + protoc-gen-grpc-java, compile
# with javac against Debian's jars. Output (outside git): ${PHOTOVEIL_ANDROID_BUILD:-build/android}
#   classes/        compiled client + generated stubs
#   classpath       the runtime class path (one line)
#   photoveil-android   launcher: photoveil-android list|pull|verify|identify|golden ...
# Needs: javac (JDK 11+), protoc, grpc_java_plugin, /usr/share/java/{grpc-*,protobuf,guava,gson,netty-*,perfmark-api}.jar
# (apt-get install protobuf-compiler protobuf-compiler-grpc-java-plugin libgrpc-java libprotobuf-java
#  libgoogle-gson-java libnetty-java libperfmark-java libgeronimo-annotation-1.3-spec-java).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${PHOTOVEIL_ANDROID_BUILD:-$root/build/android}"
jars="${PHOTOVEIL_JAVA_JARS:-/usr/share/java}"
plugin="${PROTOC_GEN_GRPC_JAVA:-$(command -v grpc_java_plugin || command -v protoc-gen-grpc-java || true)}"

need() { command -v "$1" >/dev/null 2>&1 || { echo "build.sh: $1 not found; $2" >&2; exit 3; }; }
need javac "install a JDK (openjdk-17-jdk-headless)"
need protoc "apt-get install protobuf-compiler (its version must match libprotobuf-java)"
[ -n "$plugin" ] || { echo "build.sh: grpc_java_plugin not found; apt-get install protobuf-compiler-grpc-java-plugin" >&2; exit 3; }

cp=""
for j in grpc-api grpc-core grpc-context grpc-stub grpc-protobuf grpc-protobuf-lite grpc-netty protobuf guava gson \
         perfmark-api error_prone_annotations jsr305 netty-common netty-buffer netty-transport netty-codec \
         netty-codec-http netty-codec-http2 netty-handler netty-resolver netty-codec-socks netty-handler-proxy; do
  [ -f "$jars/$j.jar" ] || { echo "build.sh: $jars/$j.jar not found; see the apt-get line at the top of $0" >&2; exit 3; }
  cp="$cp${cp:+:}$jars/$j.jar"
done

# javax.annotation.Generated on the generated stubs: compile time only (source retention)
generated="$jars/geronimo-annotation-1.3-spec.jar"
[ -f "$generated" ] || { echo "build.sh: $generated not found; apt-get install libgeronimo-annotation-1.3-spec-java" >&2; exit 3; }

rm -rf "$out/gen" "$out/classes"
mkdir -p "$out/gen" "$out/classes"
protoc -I"$root/proto" --java_out="$out/gen" --plugin=protoc-gen-grpc-java="$plugin" --grpc-java_out="$out/gen" \
  "$root"/proto/photoveil/v1/*.proto
# --release 11: the language level Android's D8 desugaring accepts
javac --release 11 -nowarn -encoding UTF-8 -cp "$cp:$generated" -d "$out/classes" \
  $(find "$out/gen" "$here/src/main/java" -name '*.java')
echo "$out/classes:$cp" > "$out/classpath"
cat > "$out/photoveil-android" <<LAUNCH
#!/usr/bin/env bash
exec java -cp "\$(cat "$out/classpath")" ai.photoveil.client.Main "\$@"
LAUNCH
chmod +x "$out/photoveil-android"
echo "$out/photoveil-android"
