"""Tar shards wherever they are kept: local paths, ``pipe:`` commands, http(s) and object stores.

open_clip and CLIP_benchmark read shards through ``webdataset``. We read the same URLs, but do not
import it: with PyTorch installed (as it is for weight conversion), importing ``webdataset``
imports ``torch`` too, ~0.5 GB of resident memory in a MindSpore process that never uses it.
The transports come from the standard library and ``fsspec`` (a dependency of
``huggingface_hub``), the tar stream from ``tarfile``:

- ``/data/00001.tar``, ``file:///data/00001.tar``: the local file;
- ``pipe:CMD``: the standard output of a shell command, open_clip's way to stream object storage
  (``pipe:aws s3 cp s3://bucket/00001.tar -``, ``pipe:obsutil cat obs://...``). A command that
  exits with an error is a failed shard, even when its output looked like a tar;
- ``http://``, ``https://``: streamed with ``urllib`` (proxies from the environment); a response
  cut short of its ``Content-Length`` is a failed shard;
- any other ``scheme://`` that ``fsspec`` knows: ``s3://`` (``pip install s3fs``; Huawei OBS and
  MinIO through ``FSSPEC_S3_ENDPOINT_URL``), ``gs://``, ``hf://``, ...

A failure (cannot open, cut mid-stream, damaged tar) ends that shard; the samples read before it
stay, and the failure is reported once, naming the shard, for the caller to count.
"""
from __future__ import annotations

import http.client
import os
import re
import subprocess
import tarfile
from typing import BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

Sample = Dict[str, bytes]  # extension ("jpg", "txt", "cls", ...) -> the member's bytes
V = TypeVar("V")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_PIPE_BROKEN = 141  # 128 + SIGPIPE: the reader stopped early on purpose (a partial epoch)


class ShardError(IOError):
    """A shard that could not be read to its end (the message names it)."""


def is_local(url: str) -> bool:
    """True for a path on this machine (a plain path or ``file://``)."""
    return not url.startswith("pipe:") and _scheme(url) in (None, "file")


def local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def _scheme(url: str) -> Optional[str]:
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else None


class _Command:
    """The standard output of a shell command; closing it checks how the command ended."""

    def __init__(self, url: str, command: str):
        self.url = url
        # The command is the user's own (their config or command line), as in open_clip.
        self.proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.status, self.error = None, ""

    def read(self, n: int = -1) -> bytes:
        return self.proc.stdout.read(n)

    def close(self, finished: bool = True) -> None:
        """Raise :class:`ShardError` when the command failed; ``finished=False`` (the reader
        stopped early) stops it first and accepts the broken pipe that causes. Closing again
        reports the same ending."""
        if self.status is None:
            if not finished and self.proc.poll() is None:
                self.proc.kill()
            self.proc.stdout.close()
            self.status = self.proc.wait()
            self.error = self.proc.stderr.read().decode("utf-8", "replace").strip()
            self.proc.stderr.close()
        if finished and self.status not in (0, _PIPE_BROKEN):
            raise ShardError(f"{self.url}: command exited with status {self.status}"
                             + (f": {self.error.splitlines()[-1]}" if self.error else ""))


def open_shard(url: str) -> BinaryIO:
    """A readable byte stream of the shard at ``url`` (see the module docstring for the kinds)."""
    if url.startswith("pipe:"):
        return _Command(url, url[len("pipe:"):])
    scheme = _scheme(url)
    if scheme in (None, "file"):
        return open(local_path(url), "rb")
    if scheme in ("http", "https"):
        import urllib.request

        return urllib.request.urlopen(url, timeout=float(os.environ.get("MINDCLIP_SHARD_TIMEOUT", 60)))
    import fsspec

    try:
        return fsspec.open(url, "rb").open()
    except ImportError as exc:  # fsspec names the package that serves the scheme
        raise ShardError(f"{url}: {exc}") from exc
    except ValueError as exc:
        raise ShardError(f"{url}: no transport for {scheme}:// ({exc}); use a local path, "
                         "pipe:COMMAND, http(s):// or a scheme fsspec knows (s3:// with s3fs)") from exc


def _close(stream, finished: bool) -> None:
    if isinstance(stream, _Command):
        stream.close(finished)
    else:
        stream.close()


def _key_and_extension(name: str) -> Tuple[Optional[str], str]:
    """``dir/00012.seg.jpg`` -> (``dir/00012``, ``seg.jpg``): webdataset's grouping rule (the
    key ends at the first dot of the file name)."""
    directory, base = os.path.split(name)
    if "." not in base or base.startswith("__"):
        return None, ""
    stem, ext = base.split(".", 1)
    return os.path.join(directory, stem), ext.lower()


def _grouped(members: Iterator[Tuple[str, V]]) -> Iterator[Tuple[str, Dict[str, V]]]:
    """Consecutive ``(member name, value)`` pairs sharing a key as ``(key, {extension: value})``.
    A failure raised by ``members`` ends the grouping without the sample it interrupted."""
    key, parts = None, {}
    for name, value in members:
        member_key, ext = _key_and_extension(name)
        if member_key is None:
            continue
        if member_key != key:
            if key is not None:
                yield key, parts
            key, parts = member_key, {}
        parts[ext] = value
    if key is not None:
        yield key, parts


def _streamed_members(tar: tarfile.TarFile, stream) -> Iterator[Tuple[str, bytes]]:
    for member in tar:
        if member.isfile():
            yield member.name, tar.extractfile(member).read()
    # closed before the last sample is let go: a command that failed fails its shard, and
    # what it wrote last is not trusted
    _close(stream, True)


def shard_samples(urls: Sequence[str]) -> Iterator[Union[Tuple[str, Sample], ShardError]]:
    """Samples of the shards in order, as ``(key, {extension: bytes})``: consecutive members
    sharing a key are one sample. A shard that fails yields a :class:`ShardError` in the
    stream (after the samples read before the failure) and the next shard follows."""
    for url in urls:
        stream = None
        try:
            stream = open_shard(url)
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                yield from _grouped(_streamed_members(tar, stream))
        except GeneratorExit:
            if stream is not None:
                _close(stream, False)
            raise
        except (tarfile.TarError, OSError, EOFError, ValueError, http.client.HTTPException) as exc:
            if stream is not None:
                try:
                    _close(stream, True)
                except (ShardError, OSError) as close_exc:
                    exc = close_exc  # the command's own failure says more than the tar error
            yield exc if isinstance(exc, ShardError) else ShardError(f"{url}: {exc}")


def missing_local(urls: Sequence[str]) -> List[str]:
    """The local shards of ``urls`` that do not exist (remote ones are found out when read)."""
    return [u for u in urls if is_local(u) and not os.path.isfile(local_path(u))]


class Member:
    """One tar member of a local shard, read by seeking when called (random access for
    evaluation, where the loader reads images in any order on several threads)."""

    __slots__ = ("path", "offset", "size", "name")

    def __init__(self, path: str, offset: int, size: int, name: str):
        self.path, self.offset, self.size, self.name = path, offset, size, name

    def __call__(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.name}: shard ends before the member's {self.size} bytes")
        return data

    def __repr__(self) -> str:
        return self.name


def _indexed_members(tar: tarfile.TarFile, path: str) -> Iterator[Tuple[str, Member]]:
    size = os.path.getsize(path)
    for member in tar:
        if not member.isfile():
            continue
        if member.offset_data + member.size > size:
            # tarfile's index stops quietly where a file was cut: say so
            raise ShardError(f"{path}: cut inside {member.name} (unexpected end of data)")
        yield member.name, Member(path, member.offset_data, member.size, f"{path}:{member.name}")
    with open(path, "rb") as f:
        f.seek(tar.offset)
        if len(f.read(1024)) < 1024:  # a complete tar ends with two zero blocks
            raise ShardError(f"{path}: no end-of-archive marker after {tar.offset} bytes (truncated)")


def index_shard(path: str) -> Tuple[List[Tuple[str, Dict[str, Member]]], Optional[ShardError]]:
    """The samples of a local shard as ``(key, {extension: Member})`` in tar order, grouped by
    the rule :func:`shard_samples` uses, read from the tar headers only; and the error that
    ended a damaged shard early (the samples indexed before it stay, less the one it cut)."""
    samples: List[Tuple[str, Dict[str, Member]]] = []
    try:
        with tarfile.open(path, "r:") as tar:
            samples.extend(_grouped(_indexed_members(tar, path)))
    except ShardError as exc:
        return samples, exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        return samples, ShardError(f"{path}: {exc}")
    return samples, None
