package ai.photoveil.client;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.security.AlgorithmParameters;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.MessageDigest;
import java.security.PublicKey;
import java.security.Signature;
import java.security.interfaces.ECPublicKey;
import java.security.spec.ECGenParameterSpec;
import java.security.spec.ECParameterSpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;

/**
 * Verifies an artifact folder signed by the provider with OpenSSF model-signing (an ECDSA
 * P-256 key, {@code photoveil artifacts sign}), using only java.security and Gson.
 *
 * <p>The bundle ({@code model.sig}) is a Sigstore bundle (v0.3 JSON) holding a DSSE envelope
 * whose payload is an in-toto Statement v1 with predicate type
 * {@code https://model_signing/signature/v1.0}: every file of the folder with its sha256 and a
 * root digest (sha256 over the file digests in order) as the subject. Checked here, in order:
 * the bundle parses; its key hint (sha256 of the signer's PEM public key) is the pinned key's;
 * the ECDSA signature over DSSE's pre-authentication encoding verifies with the pinned key;
 * the statement is a model-signing "files" statement whose root digest matches its list; the
 * folder holds exactly the listed files (no file missing, none added, no symlink) with the
 * listed digests; and manifest.json's {@code sha256} names the one .pte that is there.
 * Nothing in the folder may be loaded unless {@link #verify} returns. Java 8 APIs plus
 * java.nio.file and java.util.Base64: Android API level 26 or later.
 */
public final class ArtifactVerifier {
    public static final String SIGNATURE_FILE = "model.sig";
    public static final String MANIFEST_FILE = "manifest.json";
    static final String BUNDLE_MEDIA_TYPE_PREFIX = "application/vnd.dev.sigstore.bundle";
    static final String PAYLOAD_TYPE = "application/vnd.in-toto+json";
    static final String STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
    static final String PREDICATE_TYPE = "https://model_signing/signature/v1.0";
    static final Set<String> READABLE_FORMATS = new HashSet<>(Arrays.asList("photoveil-artifact/1", "photoveil-artifact/2"));

    /** The artifact must not be loaded; the message says why. */
    public static final class Refused extends Exception {
        public Refused(String message) {
            super(message);
        }
    }

    private final PublicKey key;
    private final String keyHint;

    /** A verifier trusting one provider key (SubjectPublicKeyInfo PEM, P-256), as shipped in the app. */
    public ArtifactVerifier(byte[] publicKeyPem) throws Refused {
        this.key = parsePublicKey(publicKeyPem);
        this.keyHint = hex(sha256(pem(key.getEncoded()).getBytes(StandardCharsets.US_ASCII)));
    }

    static PublicKey parsePublicKey(byte[] pemBytes) throws Refused {
        String text = new String(pemBytes, StandardCharsets.US_ASCII);
        int begin = text.indexOf("-----BEGIN PUBLIC KEY-----");
        int end = text.indexOf("-----END PUBLIC KEY-----");
        if (begin < 0 || end < begin) {
            throw new Refused("the provider key is not a PEM public key (-----BEGIN PUBLIC KEY-----)");
        }
        String body = text.substring(begin + "-----BEGIN PUBLIC KEY-----".length(), end).replaceAll("\\s", "");
        try {
            PublicKey k = KeyFactory.getInstance("EC").generatePublic(new X509EncodedKeySpec(Base64.getDecoder().decode(body)));
            AlgorithmParameters p = AlgorithmParameters.getInstance("EC");
            p.init(new ECGenParameterSpec("secp256r1"));
            ECParameterSpec p256 = p.getParameterSpec(ECParameterSpec.class);
            ECParameterSpec have = ((ECPublicKey) k).getParams();
            if (!have.getOrder().equals(p256.getOrder()) || !have.getGenerator().equals(p256.getGenerator())) {
                throw new Refused("the provider key is not an ECDSA P-256 key");
            }
            return k;
        } catch (GeneralSecurityException | IllegalArgumentException | ClassCastException e) {
            throw new Refused("the provider key does not parse as an EC public key: " + e.getMessage());
        }
    }

    /** PEM the way the Python signer serialises a public key (64-column base64 lines). */
    static String pem(byte[] der) {
        String b64 = Base64.getMimeEncoder(64, "\n".getBytes(StandardCharsets.US_ASCII)).encodeToString(der);
        return "-----BEGIN PUBLIC KEY-----\n" + b64 + "\n-----END PUBLIC KEY-----\n";
    }

    /** DSSE v1 pre-authentication encoding: what the signature is over. */
    static byte[] pae(String payloadType, byte[] payload) {
        byte[] type = payloadType.getBytes(StandardCharsets.UTF_8);
        byte[] head = ("DSSEv1 " + type.length + " " + payloadType + " " + payload.length + " ")
                .getBytes(StandardCharsets.UTF_8);
        byte[] out = new byte[head.length + payload.length];
        System.arraycopy(head, 0, out, 0, head.length);
        System.arraycopy(payload, 0, out, head.length, payload.length);
        return out;
    }

    /**
     * Verify {@code dir}; return its manifest (parsed) only if everything holds.
     *
     * @throws Refused unsigned, signed by another key, a bad bundle, or a file changed / missing / added
     */
    public JsonObject verify(Path dir) throws Refused, IOException {
        return verify(dir, dir.getFileName().toString());
    }

    /** {@link #verify(Path)}, naming the artifact {@code name} in messages (a staging folder's id). */
    public JsonObject verify(Path dir, String name) throws Refused, IOException {
        Path sigPath = dir.resolve(SIGNATURE_FILE);
        if (!Files.isRegularFile(sigPath, LinkOption.NOFOLLOW_LINKS)) {
            throw new Refused("artifact '" + name + "' is not signed (no " + SIGNATURE_FILE + "); refusing to load an unsigned artifact");
        }
        JsonObject bundle = object(parse(Files.readAllBytes(sigPath), SIGNATURE_FILE), SIGNATURE_FILE);
        String media = string(bundle, "mediaType", SIGNATURE_FILE);
        if (!media.startsWith(BUNDLE_MEDIA_TYPE_PREFIX)) {
            throw new Refused(SIGNATURE_FILE + " is not a Sigstore bundle (mediaType " + media + ")");
        }
        JsonObject material = object(bundle.get("verificationMaterial"), "verificationMaterial");
        JsonElement pk = material.get("publicKey");
        if (pk != null && pk.isJsonObject() && pk.getAsJsonObject().has("hint")) {
            String hint = pk.getAsJsonObject().get("hint").getAsString();
            if (!hint.equals(keyHint)) {
                throw new Refused("artifact '" + name + "' refused: it was signed by another key than the pinned provider key");
            }
        }
        JsonObject envelope = object(bundle.get("dsseEnvelope"), "dsseEnvelope");
        String payloadType = string(envelope, "payloadType", "dsseEnvelope");
        if (!PAYLOAD_TYPE.equals(payloadType)) {
            throw new Refused("the signed payload is " + payloadType + ", not " + PAYLOAD_TYPE);
        }
        byte[] payload = b64(string(envelope, "payload", "dsseEnvelope"), "dsseEnvelope.payload");
        JsonArray sigs = array(envelope.get("signatures"), "dsseEnvelope.signatures");
        if (sigs.size() == 0) {
            throw new Refused(SIGNATURE_FILE + " holds no signature");
        }
        byte[] der = b64(string(object(sigs.get(0), "signature"), "sig", "signature"), "signature.sig");
        boolean ok;
        try {
            Signature verifier = Signature.getInstance("SHA256withECDSA");
            verifier.initVerify(key);
            verifier.update(pae(payloadType, payload));
            ok = verifier.verify(der);
        } catch (GeneralSecurityException e) {
            ok = false;  // a malformed DER signature
        }
        if (!ok) {
            throw new Refused("artifact '" + name + "' refused: the signature does not verify with the pinned provider key");
        }
        Statement signed = Statement.of(object(parse(payload, "statement"), "statement"));
        checkFiles(dir, name, signed);
        return checkManifest(dir, name);
    }

    /** What a verified model-signing statement lists: file name -> sha256 hex, and the ignored paths. */
    static final class Statement {
        final Map<String, String> digests;
        final Set<String> ignored;

        private Statement(Map<String, String> digests, Set<String> ignored) {
            this.digests = digests;
            this.ignored = ignored;
        }

        /** Parse the statement; its root digest must match its resource list. */
        static Statement of(JsonObject st) throws Refused {
            if (!STATEMENT_TYPE.equals(string(st, "_type", "statement"))) {
                throw new Refused("the statement is not an in-toto " + STATEMENT_TYPE);
            }
            if (!PREDICATE_TYPE.equals(string(st, "predicateType", "statement"))) {
                throw new Refused("the statement's predicate is not " + PREDICATE_TYPE);
            }
            JsonArray subjects = array(st.get("subject"), "subject");
            if (subjects.size() != 1) {
                throw new Refused("the statement names " + subjects.size() + " subjects; model-signing writes one");
            }
            String root = string(object(object(subjects.get(0), "subject").get("digest"), "subject.digest"), "sha256", "subject.digest");
            JsonObject predicate = object(st.get("predicate"), "predicate");
            JsonObject ser = object(predicate.get("serialization"), "serialization");
            if (!"files".equals(string(ser, "method", "serialization")) || !"sha256".equals(string(ser, "hash_type", "serialization"))) {
                throw new Refused("the statement hashes with " + ser + "; this verifier accepts method files, hash_type sha256");
            }
            MessageDigest all = newSha256();
            Map<String, String> out = new LinkedHashMap<>();
            for (JsonElement e : array(predicate.get("resources"), "resources")) {
                JsonObject r = object(e, "resource");
                if (!"sha256".equals(string(r, "algorithm", "resource"))) {
                    throw new Refused("resource " + r + " is not hashed with sha256");
                }
                String digest = string(r, "digest", "resource").toLowerCase();
                all.update(unhex(digest));
                out.put(string(r, "name", "resource"), digest);
            }
            if (!hex(all.digest()).equals(root)) {
                throw new Refused("the statement is inconsistent: its resources do not hash to its subject digest");
            }
            Set<String> ignored = new HashSet<>(Collections.singleton(SIGNATURE_FILE));
            if (ser.has("ignore_paths")) {
                ignored.addAll(strings(array(ser.get("ignore_paths"), "ignore_paths")));
            }
            return new Statement(out, ignored);
        }
    }

    private static void checkFiles(Path dir, String name, Statement statement) throws Refused, IOException {
        Set<String> ignore = statement.ignored;
        Map<String, String> signed = statement.digests;
        Set<String> present = new TreeSet<>();
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path p : (Iterable<Path>) walk::iterator) {
                String rel = dir.relativize(p).toString().replace('\\', '/');
                if (rel.isEmpty() || ignore.contains(rel.split("/")[0])) {
                    continue;
                }
                if (Files.isSymbolicLink(p)) {
                    throw new Refused("artifact '" + name + "' refused: " + rel + " is a symbolic link");
                }
                if (Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS)) {
                    present.add(rel);
                }
            }
        }
        List<String> problems = new ArrayList<>();
        for (String f : present) {
            if (!signed.containsKey(f)) {
                problems.add(f + " was added");
            }
        }
        for (Map.Entry<String, String> e : signed.entrySet()) {
            if (!present.contains(e.getKey())) {
                problems.add(e.getKey() + " is missing");
            } else if (!sha256Hex(dir.resolve(e.getKey())).equals(e.getValue())) {
                problems.add(e.getKey() + " changed");
            }
        }
        if (!problems.isEmpty()) {
            throw new Refused("artifact '" + name + "' refused: its contents differ from what was signed ("
                    + String.join(", ", problems) + ")");
        }
    }

    private static JsonObject checkManifest(Path dir, String name) throws Refused, IOException {
        Path mpath = dir.resolve(MANIFEST_FILE);
        if (!Files.isRegularFile(mpath)) {
            throw new Refused("artifact '" + name + "' has no " + MANIFEST_FILE);
        }
        JsonObject m = object(parse(Files.readAllBytes(mpath), MANIFEST_FILE), MANIFEST_FILE);
        String format = m.has("format") ? m.get("format").getAsString() : "photoveil-artifact/1";
        if (!READABLE_FORMATS.contains(format)) {
            throw new Refused(MANIFEST_FILE + " has format " + format + "; this client reads " + READABLE_FORMATS);
        }
        List<Path> ptes = new ArrayList<>();
        try (Stream<Path> s = Files.list(dir)) {
            s.filter(p -> p.getFileName().toString().endsWith(".pte")).forEach(ptes::add);
        }
        if (ptes.size() != 1) {
            throw new Refused("artifact '" + name + "' holds " + ptes.size() + " .pte files; exactly one is expected");
        }
        String program = string(m, "program", MANIFEST_FILE);
        if (!ptes.get(0).getFileName().toString().equals(program)) {
            throw new Refused(MANIFEST_FILE + " names " + program + ", not the program that is there");
        }
        if (!sha256Hex(ptes.get(0)).equals(string(m, "sha256", MANIFEST_FILE))) {
            throw new Refused(program + " does not match its manifest's sha256");
        }
        return m;
    }

    // -- small helpers ------------------------------------------------------------------

    static MessageDigest newSha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);  // every JVM has SHA-256
        }
    }

    static byte[] sha256(byte[] data) {
        return newSha256().digest(data);
    }

    public static String sha256Hex(Path file) throws IOException {
        MessageDigest md = newSha256();
        byte[] buf = new byte[1 << 16];
        try (InputStream in = Files.newInputStream(file)) {
            for (int n; (n = in.read(buf)) > 0; ) {
                md.update(buf, 0, n);
            }
        }
        return hex(md.digest());
    }

    static String hex(byte[] b) {
        StringBuilder out = new StringBuilder(2 * b.length);
        for (byte x : b) {
            out.append(Character.forDigit((x >> 4) & 0xF, 16)).append(Character.forDigit(x & 0xF, 16));
        }
        return out.toString();
    }

    static byte[] unhex(String s) throws Refused {
        if (s.length() % 2 != 0 || !s.matches("[0-9a-f]*")) {
            throw new Refused("digest " + s + " is not lowercase hex");
        }
        byte[] out = new byte[s.length() / 2];
        for (int i = 0; i < out.length; i++) {
            out[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        }
        return out;
    }

    private static JsonElement parse(byte[] data, String what) throws Refused {
        try {
            return JsonParser.parseString(new String(data, StandardCharsets.UTF_8));
        } catch (JsonParseException e) {
            throw new Refused(what + " is not valid JSON: " + e.getMessage());
        }
    }

    private static JsonObject object(JsonElement e, String what) throws Refused {
        if (e == null || !e.isJsonObject()) {
            throw new Refused(what + " is missing or not a JSON object in the signature bundle");
        }
        return e.getAsJsonObject();
    }

    private static JsonArray array(JsonElement e, String what) throws Refused {
        if (e == null || !e.isJsonArray()) {
            throw new Refused(what + " is missing or not a JSON array");
        }
        return e.getAsJsonArray();
    }

    private static String string(JsonObject o, String key, String what) throws Refused {
        JsonElement e = o.get(key);
        if (e == null || !e.isJsonPrimitive()) {
            throw new Refused(what + " has no string '" + key + "'");
        }
        return e.getAsString();
    }

    private static List<String> strings(JsonArray a) {
        List<String> out = new ArrayList<>();
        a.forEach(e -> out.add(e.getAsString()));
        return out;
    }

    private static byte[] b64(String s, String what) throws Refused {
        try {
            return Base64.getDecoder().decode(s);
        } catch (IllegalArgumentException e) {
            throw new Refused(what + " is not base64");
        }
    }
}
