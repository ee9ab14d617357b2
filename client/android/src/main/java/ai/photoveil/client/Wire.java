package ai.photoveil.client;

import ai.photoveil.v1.Features;
import ai.photoveil.v1.Input;
import ai.photoveil.v1.Tensor;
import com.google.protobuf.ByteString;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Tensors on the wire (KServe v2: little-endian raw bytes, row-major) and the request inputs
 * built from them. Plain Java: runs as is on Android.
 */
public final class Wire {
    private Wire() {
    }

    public static Tensor fp32(String name, float[] data, long[] shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        if (n != data.length) {
            throw new IllegalArgumentException("tensor " + name + ": " + data.length + " values for shape " + java.util.Arrays.toString(shape));
        }
        ByteBuffer buf = ByteBuffer.allocate(4 * data.length).order(ByteOrder.LITTLE_ENDIAN);
        buf.asFloatBuffer().put(data);
        Tensor.Builder t = Tensor.newBuilder().setName(name).setDatatype("FP32").setRawContents(ByteString.copyFrom(buf.array()));
        for (long d : shape) {
            t.addShape(d);
        }
        return t.build();
    }

    /** An image tensor input ({@code Input.tensor}). */
    public static Input imageInput(float[] chw, long[] shape) {
        return Input.newBuilder().setTensor(fp32("image", chw, shape)).build();
    }

    /** Shallow features of a split model ({@code Input.features}). */
    public static Input featuresInput(String splitPoint, float[] data, long[] shape) {
        return Input.newBuilder().setFeatures(Features.newBuilder().setSplitPoint(splitPoint)
                .setTensor(fp32("features", data, shape))).build();
    }

    /** Raw little-endian float32 values (the golden vectors' .bin files). */
    public static float[] readF32(Path file) throws IOException {
        byte[] b = Files.readAllBytes(file);
        if (b.length % 4 != 0) {
            throw new IOException(file + " holds " + b.length + " bytes, not a whole number of float32 values");
        }
        float[] out = new float[b.length / 4];
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out);
        return out;
    }
}
