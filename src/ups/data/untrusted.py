"""An HDF5 file read as untrusted input: each link and each dataset's storage is checked before UPS
reads an object of it (``ups.data.layouts.LayoutScan`` asks for every object through ``UntrustedFile``).

A file can make its reader read other files, or read nothing and return zeros without an error:

- an external link (``h5py.ExternalLink``) opens an object of another file;
- a virtual dataset maps datasets of other files; a source file that is missing reads as the fill
  value (zeros), silently;
- external raw storage reads the bytes of any file its header names, zeros past that file's end;
- a contiguous dataset whose allocated storage is smaller than its shape x item size (declared but
  never written, or cut short) reads as its fill value.

The first three are refused unless ``data.allow_external_storage`` is true; with it, the files they
read must be there and large enough (a virtual dataset whose source is missing is refused all the
same), and they are listed in ``sources`` (the latent cache's key stamps them). The last is always
refused. Chunked datasets are never refused for their storage size: compression makes it smaller,
and chunks never written (a sparse file) read as the fill value by design.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import h5py

from ups.errors import DataError

OPT_IN = "data.allow_external_storage"


def declared_bytes(dataset: h5py.Dataset) -> int:
    """Bytes of the dataset's elements as its shape and type declare them."""
    return math.prod(dataset.shape) * dataset.dtype.itemsize


def refuse_unallocated(dataset: h5py.Dataset, where: str) -> None:
    """DataError when a contiguous dataset stores fewer bytes than it declares (``where``: the file
    and the dataset, for the message)."""
    if dataset.id.get_create_plist().get_layout() != h5py.h5d.CONTIGUOUS:
        return
    declared, stored = declared_bytes(dataset), dataset.id.get_storage_size()
    if stored < declared:
        raise DataError(
            f"{where} is contiguous with shape {dataset.shape} of {dataset.dtype} ({declared:,} bytes "
            f"declared), but only {stored:,} bytes are stored: it was never written or was cut short, "
            f"and would read as its fill value. Write the file again."
        )


class UntrustedFile:
    """The objects of ``h5`` (opened from ``path``), each checked before it is handed out.

    ``sources``: the other files whose bytes the objects handed out read (external links, virtual
    sources, external raw files), resolved; empty unless ``allow_external``.
    """

    def __init__(self, path: Path, h5: h5py.File, allow_external: bool):
        self.path, self.h5, self.allow_external = path, h5, allow_external
        self.home = Path(h5.filename).resolve()
        self.sources: set[Path] = set()

    def get(self, key: str) -> h5py.Group | h5py.Dataset | None:
        """The object at ``key`` (``/``-separated), None when no link of that name is there. Every
        link on the way is checked before it is followed: an external one needs the opt-in, and
        none may lead nowhere."""
        node, parts = self.h5, key.split("/")
        for depth, name in enumerate(parts):
            if not isinstance(node, h5py.Group) or not node.id.links.exists(name.encode()):
                return None
            where, kind = "/".join(parts[: depth + 1]), node.id.links.get_info(name.encode()).type
            if kind == h5py.h5l.TYPE_EXTERNAL:
                link = node.get(name, getlink=True)
                self._refuse_unless_allowed(where, f"an external link to '{link.path}' of {link.filename}")
            elif kind not in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT):
                raise DataError(f"{self.path}: '{where}' is a user-defined link; UPS does not follow it.")
            try:
                node = node[name]
            except (KeyError, OSError):
                raise DataError(
                    f"{self.path}: '{where}' is a link ({_describe(node.get(name, getlink=True))}) that "
                    f"leads to nothing; fix the link or write the data into the file."
                ) from None
            lands = Path(node.file.filename).resolve()
            if lands != self.home:  # an external link, or a soft link that leads through one
                if kind != h5py.h5l.TYPE_EXTERNAL:
                    self._refuse_unless_allowed(where, f"a link that leads into another file, {lands}")
                self.sources.add(lands)
        return node

    def dataset(self, key: str) -> h5py.Group | h5py.Dataset | None:
        """``get(key)``, with a dataset's storage checked (see the module docstring)."""
        node = self.get(key)
        if isinstance(node, h5py.Dataset):
            where = f"{self.path}: dataset '{key}'"
            plist = node.id.get_create_plist()
            if plist.get_layout() == h5py.h5d.VIRTUAL:
                self._refuse_unless_allowed(key, "a virtual dataset (its data lives in other files)")
                self._check_virtual(node, where)
            elif plist.get_external_count():
                self._refuse_unless_allowed(key, "stored in external raw files (other files' bytes)")
                self._check_external(node, where)
            else:
                refuse_unallocated(node, where)
        return node

    def _refuse_unless_allowed(self, key: str, what: str) -> None:
        if not self.allow_external:
            raise DataError(
                f"{self.path}: '{key}' is {what}; UPS reads only the file's own bytes by default. If "
                f"you trust the files it reads, set {OPT_IN}: true."
            )

    def _check_virtual(self, dataset: h5py.Dataset, where: str) -> None:
        """Every source file and dataset of a virtual dataset is there, plain, written and large
        enough for its mapping, and the mappings cover it (HDF5 reads zeros wherever not)."""
        mapped = 0
        for source in dataset.virtual_sources():
            file = self._virtual_source_file(dataset, source.file_name)
            if file is None:
                raise DataError(
                    f"{where} is virtual and maps '{source.dset_name}' of {source.file_name}, which is "
                    f"not found (HDF5 would read zeros there); put the source file back or write the "
                    f"data into {self.path.name}."
                )
            points = source.vspace.get_select_npoints()
            self._check_virtual_source(
                file, source.dset_name, points, f"{where} maps '{source.dset_name}' of {file}"
            )
            mapped += points
            if file.resolve() != Path(self.h5.filename).resolve():
                self.sources.add(file.resolve())
        if mapped < dataset.size:
            raise DataError(
                f"{where} is virtual and maps {mapped:,} of its {dataset.size:,} elements; the rest "
                f"would read as the fill value."
            )

    @staticmethod
    def _check_virtual_source(file: Path, name: str, points: int, what: str) -> None:
        """Dataset ``name`` of ``file`` is plain (its own file's bytes), written, and holds ``points``."""
        try:
            with h5py.File(file, "r") as h5:
                target = h5.get(name)
                if not isinstance(target, h5py.Dataset):
                    raise DataError(f"{what}, which has no such dataset (HDF5 would read zeros there).")
                elsewhere = Path(target.file.filename).resolve() != file.resolve()
                if elsewhere or target.is_virtual or target.external:
                    raise DataError(f"{what}, whose data lives in yet other files; UPS reads one level only.")
                refuse_unallocated(target, what)
                if target.size < points:
                    raise DataError(f"{what}, which holds {target.size:,} elements for {points:,} mapped.")
        except (OSError, KeyError) as exc:
            raise DataError(f"{what}, which cannot be read as HDF5 ({exc}).") from None

    def _virtual_source_file(self, dataset: h5py.Dataset, name: str) -> Path | None:
        """Where HDF5 looks for a virtual source file, in its order: the name if absolute, under
        ``HDF5_VDS_PREFIX`` or the access list's prefix, beside the virtual file, in the working
        folder; the first file found, or None."""
        home = Path(self.h5.filename).parent
        if name == ".":
            return Path(self.h5.filename)
        raw = Path(name)
        relative = Path(raw.name) if raw.is_absolute() else raw
        own_prefix = dataset.id.get_access_plist().get_virtual_prefix().decode()
        prefixes = (os.environ.get("HDF5_VDS_PREFIX"), own_prefix)
        candidates = [raw] if raw.is_absolute() else []
        candidates += [_with_origin(p, home) / relative for p in prefixes if p]
        candidates += [home / relative, relative]
        return next((c for c in candidates if c.is_file()), None)

    def _check_external(self, dataset: h5py.Dataset, where: str) -> None:
        """Each external raw file holds the bytes its segment gives the dataset (HDF5 reads zeros
        past a file's end). Relative names are under ``HDF5_EXTFILE_PREFIX`` or the access list's
        prefix when set, else in the working folder, as HDF5 looks for them."""
        home = Path(self.h5.filename).parent
        own_prefix = dataset.id.get_access_plist().get_efile_prefix().decode()
        prefix = os.environ.get("HDF5_EXTFILE_PREFIX") or own_prefix
        needed = declared_bytes(dataset)
        for name, offset, size in dataset.external:
            if needed <= 0:
                break
            raw = Path(os.fsdecode(name))
            file = raw if raw.is_absolute() else (_with_origin(prefix, home) if prefix else Path.cwd()) / raw
            used = min(size, needed)
            held = max(0, file.stat().st_size - offset) if file.is_file() else 0
            if held < used:
                raise DataError(
                    f"{where} reads {used:,} bytes from byte {offset:,} of the external file {file}, which "
                    f"holds {held:,} there (HDF5 would read zeros); put the whole file back."
                )
            needed -= used
            self.sources.add(file.resolve())


def _with_origin(prefix: str, home: Path) -> Path:
    """An HDF5 search prefix, with ``${ORIGIN}`` read as the folder of the file that names it."""
    return Path(prefix.replace("${ORIGIN}", str(home)))


def _describe(link) -> str:
    if isinstance(link, h5py.ExternalLink):
        return f"to '{link.path}' of {link.filename}"
    if isinstance(link, h5py.SoftLink):
        return f"to '{link.path}'"
    return "hard"
