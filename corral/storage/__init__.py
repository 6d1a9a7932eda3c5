"""Durable storage for a KV member: a segmented WAL and snapshot files, behind a disk seam.

`disk` is the seam (the real OS, or a disk that loses everything not fsynced when the
process dies, for crash tests); `wal` frames Raft records (length, CRC chain, type) into
preallocated segments and repairs a torn tail on open; `snap` writes snapshots atomically
(temp file, fsync, rename, directory fsync) and prunes old ones. Both formats carry a version;
a release reads what the previous release wrote.
"""
