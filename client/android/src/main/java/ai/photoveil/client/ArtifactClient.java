package ai.photoveil.client;

import ai.photoveil.v1.ArtifactChunk;
import ai.photoveil.v1.ArtifactFile;
import ai.photoveil.v1.ArtifactInfo;
import ai.photoveil.v1.ArtifactServiceGrpc;
import ai.photoveil.v1.FileChunk;
import ai.photoveil.v1.GetArtifactRequest;
import ai.photoveil.v1.ListArtifactsRequest;
import com.google.gson.JsonObject;
import io.grpc.CallCredentials;
import io.grpc.Channel;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * Lists and downloads artifacts over {@code ArtifactService}, then verifies them with
 * {@link ArtifactVerifier}. A download lands in a staging folder; only a folder that
 * verifies is moved to {@code dest/<artifact_id>}, so nothing unverified is left to load.
 */
public final class ArtifactClient {
    /** What the server accepts as an artifact id (server/artifacts.py). */
    public static final java.util.regex.Pattern ARTIFACT_ID = java.util.regex.Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,127}");
    private final ArtifactServiceGrpc.ArtifactServiceBlockingStub stub;
    private final long deadlineMs;

    public ArtifactClient(Channel channel, CallCredentials credentials, long deadlineMs) {
        ArtifactServiceGrpc.ArtifactServiceBlockingStub s = ArtifactServiceGrpc.newBlockingStub(channel);
        this.stub = credentials == null ? s : s.withCallCredentials(credentials);
        this.deadlineMs = deadlineMs;
    }

    public List<ArtifactInfo> list(String modelId) {
        return stub.withDeadlineAfter(deadlineMs, TimeUnit.MILLISECONDS)
                .listArtifacts(ListArtifactsRequest.newBuilder().setModelId(modelId).build()).getArtifactsList();
    }

    /** Download, check sizes/digests against the listing, verify the signature; the manifest. */
    public JsonObject pull(String artifactId, Path dest, ArtifactVerifier verifier)
            throws IOException, ArtifactVerifier.Refused {
        if (!ARTIFACT_ID.matcher(artifactId).matches()) {
            throw new IllegalArgumentException("artifact id '" + artifactId + "' is not 1-128 letters, digits, '.', '_' or '-'");
        }
        Files.createDirectories(dest);
        Path staging = Files.createTempDirectory(dest, "." + artifactId + ".");
        try {
            download(artifactId, staging);
            JsonObject manifest = verifier.verify(staging, artifactId);
            Path finalDir = dest.resolve(artifactId);
            deleteTree(finalDir);
            Files.move(staging, finalDir, StandardCopyOption.ATOMIC_MOVE);
            return manifest;
        } finally {
            deleteTree(staging);
        }
    }

    private void download(String artifactId, Path dir) throws IOException, ArtifactVerifier.Refused {
        // the whole stream (every file) shares one deadline; large programs need a longer one
        Iterator<ArtifactChunk> it = stub.withDeadlineAfter(Math.max(deadlineMs, 120_000), TimeUnit.MILLISECONDS)
                .getArtifact(GetArtifactRequest.newBuilder().setArtifactId(artifactId).build());
        if (!it.hasNext()) {
            throw new ArtifactVerifier.Refused("GetArtifact(" + artifactId + ") sent nothing");
        }
        ArtifactChunk first = it.next();
        if (first.getPartCase() != ArtifactChunk.PartCase.INFO) {
            throw new ArtifactVerifier.Refused("GetArtifact(" + artifactId + ") did not start with the artifact info");
        }
        Map<String, ArtifactFile> expected = new HashMap<>();
        for (ArtifactFile f : first.getInfo().getFilesList()) {
            expected.put(f.getName(), f);
        }
        Map<String, OutputStream> open = new HashMap<>();
        Map<String, Long> written = new HashMap<>();
        try {
            while (it.hasNext()) {
                FileChunk c = it.next().getChunk();
                String name = c.getName();
                if (!expected.containsKey(name) || name.contains("/") || name.contains("\\") || name.startsWith(".")) {
                    throw new ArtifactVerifier.Refused("GetArtifact sent a chunk of unexpected file '" + name + "'");
                }
                long at = written.getOrDefault(name, 0L);
                if (c.getOffset() != at) {
                    throw new ArtifactVerifier.Refused(name + ": chunk at offset " + c.getOffset() + ", expected " + at);
                }
                OutputStream out = open.get(name);
                if (out == null) {
                    out = Files.newOutputStream(dir.resolve(name));
                    open.put(name, out);
                }
                c.getData().writeTo(out);
                written.put(name, at + c.getData().size());
            }
        } finally {
            for (OutputStream o : open.values()) {
                o.close();
            }
        }
        for (ArtifactFile f : expected.values()) {
            Path p = dir.resolve(f.getName());
            if (!Files.isRegularFile(p)) {
                throw new ArtifactVerifier.Refused("GetArtifact(" + artifactId + ") sent no data for " + f.getName());
            }
            if (Files.size(p) != f.getSize() || !ArtifactVerifier.sha256Hex(p).equals(f.getSha256())) {
                throw new ArtifactVerifier.Refused(f.getName() + " arrived with another size or sha256 than listed; the transfer was corrupted");
            }
        }
    }

    static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        try (Stream<Path> s = Files.walk(p)) {
            for (Path q : (Iterable<Path>) s.sorted(Comparator.reverseOrder())::iterator) {
                Files.delete(q);
            }
        }
    }
}
