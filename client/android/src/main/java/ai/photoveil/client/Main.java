package ai.photoveil.client;

import ai.photoveil.v1.ArtifactInfo;
import ai.photoveil.v1.Candidate;
import ai.photoveil.v1.IdentifyRequest;
import ai.photoveil.v1.IdentifyResponse;
import ai.photoveil.v1.Input;
import ai.photoveil.v1.RecognitionServiceGrpc;
import ai.photoveil.v1.Result;
import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.protobuf.ByteString;
import io.grpc.CallCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.StatusRuntimeException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * {@code photoveil-android}: the Android client's code path on a JVM.
 *
 * <pre>
 *   list     --target H:P [--token T] [--model M]
 *   pull     --target H:P [--token T] --artifact ID --public-key provider.pub --out DIR
 *   verify   --dir ARTIFACT_DIR --public-key provider.pub
 *   identify --target H:P [--token T] --model M (--image FILE.png|jpg | --golden DIR [--request identify_image])
 *   golden   --dir GOLDEN_DIR
 * </pre>
 * Common: {@code --deadline-ms N} (default 10000), {@code --plaintext} (loopback; default TLS).
 * Prints one JSON object on stdout. Exit 0 ok, 1 refused / RPC error (one line on stderr:
 * {@code error: ...}, with the gRPC status code name for RPC errors), 2 bad arguments.
 */
public final class Main {
    private static final Gson GSON = new GsonBuilder().disableHtmlEscaping().create();

    private Main() {
    }

    static final class Usage extends Exception {
        Usage(String m) {
            super(m);
        }
    }

    public static void main(String[] argv) {
        int rc;
        try {
            rc = run(argv);
        } catch (Usage e) {
            System.err.println("photoveil-android: error: " + e.getMessage());
            rc = 2;
        } catch (ArtifactVerifier.Refused e) {
            System.err.println("error: REFUSED: " + e.getMessage());
            rc = 1;
        } catch (StatusRuntimeException e) {
            System.err.println("error: " + e.getStatus().getCode() + ": " + e.getStatus().getDescription());
            rc = 1;
        } catch (IOException e) {
            System.err.println("error: IO: " + e.getMessage());
            rc = 1;
        }
        System.exit(rc);
    }

    static Map<String, String> flags(String[] argv, int from, List<String> known, List<String> bools) throws Usage {
        Map<String, String> out = new HashMap<>();
        for (int i = from; i < argv.length; i++) {
            String a = argv[i];
            if (!a.startsWith("--") || !(known.contains(a.substring(2)) || bools.contains(a.substring(2)))) {
                throw new Usage("unknown argument " + a + "; accepted: --" + String.join(", --", known)
                        + (bools.isEmpty() ? "" : ", --" + String.join(", --", bools)));
            }
            String k = a.substring(2);
            if (bools.contains(k)) {
                out.put(k, "true");
            } else if (i + 1 >= argv.length) {
                throw new Usage(a + " needs a value");
            } else {
                out.put(k, argv[++i]);
            }
        }
        return out;
    }

    static String need(Map<String, String> f, String k) throws Usage {
        String v = f.get(k);
        if (v == null || v.isEmpty()) {
            throw new Usage("--" + k + " is required");
        }
        return v;
    }

    static int run(String[] argv) throws Usage, ArtifactVerifier.Refused, IOException {
        if (argv.length == 0) {
            throw new Usage("give a command: list, pull, verify, identify, golden");
        }
        List<String> net = List.of("target", "token", "deadline-ms");
        List<String> plain = List.of("plaintext");
        switch (argv[0]) {
            case "list": {
                Map<String, String> f = flags(argv, 1, concat(net, "model"), plain);
                ManagedChannel ch = channel(f);
                try {
                    JsonArray arr = new JsonArray();
                    for (ArtifactInfo a : artifacts(f, ch).list(f.getOrDefault("model", ""))) {
                        JsonObject o = new JsonObject();
                        o.addProperty("artifact_id", a.getArtifactId());
                        o.addProperty("model_id", a.getModelId());
                        o.addProperty("kind", a.getMethod());
                        o.addProperty("signed", a.getSigned());
                        o.addProperty("files", a.getFilesCount());
                        arr.add(o);
                    }
                    JsonObject out = new JsonObject();
                    out.add("artifacts", arr);
                    print(out);
                } finally {
                    close(ch);
                }
                return 0;
            }
            case "pull": {
                Map<String, String> f = flags(argv, 1, concat(net, "artifact", "public-key", "out"), plain);
                ArtifactVerifier verifier = verifier(f);
                ManagedChannel ch = channel(f);
                try {
                    String id = need(f, "artifact");
                    if (!ArtifactClient.ARTIFACT_ID.matcher(id).matches()) {
                        throw new Usage("--artifact " + id + " is not an artifact id (1-128 letters, digits, '.', '_' or '-')");
                    }
                    Path dest = Paths.get(need(f, "out"));
                    print(summary(id, dest.resolve(id), artifacts(f, ch).pull(id, dest, verifier)));
                } finally {
                    close(ch);
                }
                return 0;
            }
            case "verify": {
                Map<String, String> f = flags(argv, 1, List.of("dir", "public-key"), List.of());
                Path dir = Paths.get(need(f, "dir"));
                if (!Files.isDirectory(dir)) {
                    throw new Usage("--dir " + dir + " is not a folder");
                }
                ArtifactVerifier verifier = verifier(f);
                print(summary(dir.getFileName().toString(), dir, verifier.verify(dir)));
                return 0;
            }
            case "identify": {
                Map<String, String> f = flags(argv, 1, concat(net, "model", "image", "golden", "request", "top-k"), plain);
                IdentifyRequest req = identifyRequest(f);
                ManagedChannel ch = channel(f);
                try {
                    long t0 = System.nanoTime();
                    IdentifyResponse r = recognition(f, ch).identify(req);
                    JsonObject out = new JsonObject();
                    out.addProperty("model_id", r.getModelId());
                    out.addProperty("model_version", r.getModelVersion());
                    out.addProperty("bytes_sent", req.getSerializedSize());
                    out.addProperty("rpc_ms", (System.nanoTime() - t0) / 1e6);
                    JsonArray results = new JsonArray();
                    for (Result res : r.getResultsList()) {
                        JsonArray cands = new JsonArray();
                        for (Candidate c : res.getCandidatesList()) {
                            JsonObject o = new JsonObject();
                            o.addProperty("label", c.getLabel());
                            o.addProperty("score", c.getScore());
                            cands.add(o);
                        }
                        results.add(cands);
                    }
                    out.add("results", results);
                    print(out);
                } finally {
                    close(ch);
                }
                return 0;
            }
            case "golden": {
                Map<String, String> f = flags(argv, 1, List.of("dir"), List.of());
                JsonArray checks = new Golden(Paths.get(need(f, "dir"))).check();
                boolean ok = true;
                for (int i = 0; i < checks.size(); i++) {
                    ok &= checks.get(i).getAsJsonObject().get("ok").getAsBoolean();
                }
                JsonObject out = new JsonObject();
                out.addProperty("ok", ok);
                out.add("checks", checks);
                print(out);
                return ok ? 0 : 1;
            }
            default:
                throw new Usage("unknown command " + argv[0] + "; commands: list, pull, verify, identify, golden");
        }
    }

    static IdentifyRequest identifyRequest(Map<String, String> f) throws Usage, IOException {
        int topK;
        try {
            topK = Integer.parseInt(f.getOrDefault("top-k", "5"));
        } catch (NumberFormatException e) {
            throw new Usage("--top-k must be an integer, got " + f.get("top-k"));
        }
        if (f.containsKey("golden") == f.containsKey("image")) {
            throw new Usage("give exactly one of --image FILE (a PNG/JPEG) or --golden DIR");
        }
        if (f.containsKey("image")) {
            Path img = Paths.get(f.get("image"));
            if (!Files.isRegularFile(img)) {
                throw new Usage("--image " + img + " does not exist");
            }
            // the encoded photo as it is: the server applies EXIF orientation and resizes
            return IdentifyRequest.newBuilder().setModelId(need(f, "model")).setTopK(topK)
                    .setInput(Input.newBuilder().setEncodedImage(ByteString.copyFrom(Files.readAllBytes(img)))).build();
        }
        Golden g = new Golden(Paths.get(f.get("golden")));
        String name = f.getOrDefault("request", "identify_image");
        JsonObject spec = g.requestSpec(name);
        if (spec == null) {
            throw new Usage("the golden folder has no request " + name);
        }
        IdentifyRequest r = g.request(spec);
        return f.containsKey("model") ? r.toBuilder().setModelId(f.get("model")).setTopK(topK).build()
                : r.toBuilder().setTopK(topK).build();
    }

    /** The pinned provider key (--public-key, SubjectPublicKeyInfo PEM). */
    static ArtifactVerifier verifier(Map<String, String> f) throws Usage, IOException, ArtifactVerifier.Refused {
        Path key = Paths.get(need(f, "public-key"));
        if (!Files.isRegularFile(key)) {
            throw new Usage("--public-key " + key + " does not exist; give the provider's PEM public key");
        }
        return new ArtifactVerifier(Files.readAllBytes(key));
    }

    static JsonObject summary(String id, Path dir, JsonObject manifest) {
        JsonObject out = new JsonObject();
        out.addProperty("artifact_id", id);
        out.addProperty("verified", true);
        out.addProperty("folder", dir.toString());
        for (String k : new String[] {"kind", "model_id", "program", "sha256", "split", "layout", "channel_order"}) {
            if (manifest.has(k)) {
                out.add(k, manifest.get(k));
            }
        }
        for (String k : new String[] {"inputs", "normalisation", "alignment", "params"}) {
            if (manifest.has(k)) {
                out.add(k, manifest.get(k));
            }
        }
        return out;
    }

    static ManagedChannel channel(Map<String, String> f) throws Usage {
        ManagedChannelBuilder<?> b = ManagedChannelBuilder.forTarget(need(f, "target"));
        if (f.containsKey("plaintext")) {
            b.usePlaintext();
        } else {
            b.useTransportSecurity();
        }
        return b.build();
    }

    static long deadline(Map<String, String> f) throws Usage {
        try {
            long d = Long.parseLong(f.getOrDefault("deadline-ms", "10000"));
            if (d <= 0) {
                throw new NumberFormatException();
            }
            return d;
        } catch (NumberFormatException e) {
            throw new Usage("--deadline-ms must be a positive integer, got " + f.get("deadline-ms"));
        }
    }

    static CallCredentials credentials(Map<String, String> f) {
        String token = f.get("token");
        return token == null ? null : new BearerToken(token);
    }

    static ArtifactClient artifacts(Map<String, String> f, ManagedChannel ch) throws Usage {
        return new ArtifactClient(ch, credentials(f), deadline(f));
    }

    static RecognitionServiceGrpc.RecognitionServiceBlockingStub recognition(Map<String, String> f, ManagedChannel ch)
            throws Usage {
        RecognitionServiceGrpc.RecognitionServiceBlockingStub s = RecognitionServiceGrpc.newBlockingStub(ch)
                .withDeadlineAfter(deadline(f), TimeUnit.MILLISECONDS);
        CallCredentials c = credentials(f);
        return c == null ? s : s.withCallCredentials(c);
    }

    static void close(ManagedChannel ch) {
        ch.shutdown();
        try {
            ch.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    static List<String> concat(List<String> a, String... more) {
        List<String> out = new java.util.ArrayList<>(a);
        out.addAll(List.of(more));
        return out;
    }

    static void print(JsonObject o) {
        System.out.println(GSON.toJson(o));
    }
}
