"""The format's limits. They are part of format 1.x: a reader refuses anything beyond them
before reading further, so a hostile manifest cannot exhaust memory, disk or time."""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Largest manifest.json accepted, checked on the file size before it is read.
MAX_MANIFEST_BYTES = 128 * MiB
#: Largest signature file (manifest.json.sig) or receipt signature.
MAX_SIGNATURE_FILE_BYTES = 1 * MiB
#: Most signatures in one signature file.
MAX_SIGNATURES = 32
#: Largest trust policy file.
MAX_TRUST_FILE_BYTES = 1 * MiB
#: Largest receipt file.
MAX_RECEIPT_BYTES = 128 * MiB
#: Largest raw (uncompressed) chunk. The exporter's chunker never cuts larger.
MAX_CHUNK_SIZE = 16 * MiB
#: Largest stored (compressed) chunk: zstd's worst case for MAX_CHUNK_SIZE plus slack.
MAX_STORED_CHUNK_SIZE = MAX_CHUNK_SIZE + 1 * MiB
#: Most distinct chunks in one bundle (4 TiB at the default 4 MiB average chunk).
MAX_CHUNKS = 1 << 20
#: Most artifacts in one bundle.
MAX_ARTIFACTS = 10_000
#: Most files or blobs across all artifacts of a bundle.
MAX_ENTRIES = 1_000_000
#: Most chunk references across all entries (a chunk may be referenced more than once).
MAX_CHUNK_REFS = 4 << 20
#: Most pack files, and most volumes.
MAX_PACKS = 1 << 16
MAX_VOLUMES = 999
#: Largest pack file (FAT32 caps a file at 4 GiB - 1).
MAX_PACK_SIZE = 4 * GiB - 1
#: Largest single file or blob (2**53 - 1: the I-JSON integer range).
MAX_ENTRY_SIZE = (1 << 53) - 1
#: Path shape limits (bytes of UTF-8).
MAX_PATH_BYTES = 4096
MAX_PATH_COMPONENT_BYTES = 255
#: Short strings: names, versions, channels, media types, refs.
MAX_NAME_LEN = 255
#: bundle.producer, in characters (Unicode code points).
MAX_PRODUCER_LEN = 255
MAX_TEXT_LEN = 4096
#: Kubernetes manifest sets (manifests.kube): largest single YAML file (the kube-apiserver
#: takes at most 3 MiB per request) ...
MAX_KUBE_FILE_BYTES = 8 * MiB
#: ... largest manifest set, all files together (held in memory while checked) ...
MAX_KUBE_SET_BYTES = 64 * MiB
#: ... most values (scalars, mappings, sequences) in one document once aliases are expanded ...
MAX_KUBE_NODES = 200_000
#: ... and deepest nesting of one document.
MAX_KUBE_DEPTH = 64
#: Largest kubeconfig file ``--kubeconfig`` names (embedded certificates take a few KiB each).
MAX_KUBECONFIG_BYTES = 4 * MiB
