package ai.photoveil.client;

import ai.photoveil.v1.IdentifyRequest;
import ai.photoveil.v1.Input;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

/**
 * The parts of a golden folder ({@code photoveil export ... --golden}) the JVM can check
 * without the ExecuTorch runtime: every tensor file's sha256, the decode of the golden image
 * to the program's input (RGB / 255, NCHW float32) and the exact wire bytes of the Identify
 * requests built from the recorded result. The program calls themselves (one step, N steps,
 * features) are checked on the device's runtime against the same files, and here by
 * {@code photoveil.export.golden.check_golden} on the Python runtime.
 */
public final class Golden {
    private final Path dir;
    private final JsonObject doc;

    public Golden(Path dir) throws IOException {
        this.dir = dir;
        this.doc = JsonParser.parseString(Files.readString(dir.resolve("golden.json"), StandardCharsets.UTF_8)).getAsJsonObject();
        if (!"photoveil-golden/1".equals(doc.get("format").getAsString())) {
            throw new IOException(dir + "/golden.json has format " + doc.get("format") + "; this client reads photoveil-golden/1");
        }
    }

    public JsonObject tensor(String name) {
        return doc.getAsJsonObject("tensors").getAsJsonObject(name);
    }

    public float[] floats(String name) throws IOException {
        JsonObject t = tensor(name);
        Path f = dir.resolve(t.get("file").getAsString());
        if (!ArtifactVerifier.sha256Hex(f).equals(t.get("sha256").getAsString())) {
            throw new IOException(f + " does not match its sha256 in golden.json");
        }
        return Wire.readF32(f);
    }

    public static long[] shape(JsonObject tensor) {
        JsonArray a = tensor.getAsJsonArray("shape");
        long[] out = new long[a.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.get(i).getAsLong();
        }
        return out;
    }

    /** Run the JVM-side checks; one JSON record per check, {@code ok} on each. */
    public JsonArray check() throws IOException {
        JsonArray out = new JsonArray();
        // 1. every tensor file is the one golden.json lists
        for (String name : doc.getAsJsonObject("tensors").keySet()) {
            JsonObject t = tensor(name);
            boolean ok = ArtifactVerifier.sha256Hex(dir.resolve(t.get("file").getAsString())).equals(t.get("sha256").getAsString());
            out.add(record("sha256", name, ok, ok ? "" : "file changed"));
        }
        // 2. the PNG decodes to exactly the program input the host used
        JsonObject image = doc.getAsJsonObject("image");
        String xName = image.get("tensor").getAsString();
        long[] xs = shape(tensor(xName));
        float[] decoded = ImageDecode.chw(dir.resolve(image.get("file").getAsString()), (int) xs[1]);
        float[] x = floats(xName);
        int per = decoded.length;
        float maxAbs = per == 0 ? Float.NaN : 0f;
        boolean sizeOk = x.length % per == 0;
        for (int i = 0; sizeOk && i < x.length; i++) {
            maxAbs = Math.max(maxAbs, Math.abs(x[i] - decoded[i % per]));  // a batch repeats the image
        }
        out.add(record("decode", xName, sizeOk && maxAbs == 0f, "max abs " + maxAbs));
        // 3. the Identify requests serialise to the recorded bytes
        JsonObject requests = doc.getAsJsonObject("requests");
        for (String name : requests.keySet()) {
            JsonObject r = requests.getAsJsonObject(name);
            byte[] mine = request(r).toByteArray();
            byte[] want = Files.readAllBytes(dir.resolve(r.get("file").getAsString()));
            out.add(record("wire", name, Arrays.equals(mine, want), mine.length + " bytes, recorded " + want.length));
        }
        return out;
    }

    /** The Identify request a phone sends for a recorded result (image tensor or features). */
    public IdentifyRequest request(JsonObject r) throws IOException {
        String t = r.get("tensor").getAsString();
        float[] data = floats(t);
        long[] s = shape(tensor(t));
        Input input = r.has("split_point") ? Wire.featuresInput(r.get("split_point").getAsString(), data, s)
                : Wire.imageInput(data, s);
        return IdentifyRequest.newBuilder().setModelId(r.get("model_id").getAsString()).setInput(input)
                .setTopK(r.get("top_k").getAsInt()).build();
    }

    public JsonObject requestSpec(String name) {
        JsonElement e = doc.getAsJsonObject("requests").get(name);
        return e == null ? null : e.getAsJsonObject();
    }

    private static JsonObject record(String check, String what, boolean ok, String detail) {
        JsonObject o = new JsonObject();
        o.addProperty("check", check);
        o.addProperty("item", what);
        o.addProperty("ok", ok);
        o.addProperty("detail", detail);
        return o;
    }
}
