package ai.photoveil.client;

import java.awt.image.BufferedImage;
import java.awt.image.Raster;
import java.io.IOException;
import java.nio.file.Path;
import javax.imageio.ImageIO;

/**
 * The image decode every program input starts from, on a JVM (ImageIO): channels x H x W
 * float32, value / 255 (RGB, or grey for one-channel programs). JVM only: on Android the
 * same arithmetic runs on {@code Bitmap.getPixels} (docs/android.md, section 3).
 */
public final class ImageDecode {
    private ImageDecode() {
    }

    /** A PNG/JPEG decoded to {@code channels} x H x W floats (1: grey, 3: RGB), value / 255. */
    public static float[] chw(Path file, int channels) throws IOException {
        BufferedImage img = ImageIO.read(file.toFile());
        if (img == null) {
            throw new IOException(file + " is not a readable PNG/JPEG image");
        }
        Raster r = img.getRaster();
        int h = img.getHeight(), w = img.getWidth(), bands = r.getNumBands();
        if (bands < channels) {
            throw new IOException(file + " has " + bands + " channels; the program takes " + channels);
        }
        float[] out = new float[channels * h * w];
        int[] px = new int[bands];
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                r.getPixel(x, y, px);  // bands in the colour model's order: R, G, B (, A)
                for (int c = 0; c < channels; c++) {
                    out[c * h * w + y * w + x] = (px[c] & 0xFF) / 255f;
                }
            }
        }
        return out;
    }
}
