"""The streaming data path: images decoded batch by batch by DataLoader workers, for data that does not fit
on the device (Clothing1M in full, mini-WebVision) or that a trial asks to stream (``stream: true``).

A :class:`StreamedImages` stands where the on-device uint8 (N, C, H, W) tensor stands (``ctx.train.x``,
``ctx.golden.x``, the engine's evaluation sets), so a method written for the on-device path runs unchanged:
indexing it with an index tensor, an array or a slice gives that uint8 batch on the device, row i being
sample ``idx[i]`` (per-sample state such as DivideMix's losses or ELR's targets indexes as before), and the
trial's device transform (crop + flip + normalise, or the central crop) does the rest. A batch arrives in
one of two ways:

- planned: :meth:`MethodContext.batches` knows a pass's order before its first step, so it hands the
  batches to a torch ``DataLoader`` of its own (worker processes, pinned memory, ``prefetch_factor`` batches
  ahead per worker); the batch it yields has been decoded by the time the method indexes with it. Several
  passes may run at once (DivideMix's labeled and unlabeled batches): a request made of samples of the
  batches in hand (``x[torch.cat([xi, xi, ui, ui])]``) is gathered from them on the device;
- on demand: any other index (a per-sample loss pass over slices, a subset's pass) is decoded by a pool of
  threads (PIL releases the GIL while it decodes and resizes), the request split over them, and the next
  slice of a sequential pass read ahead.

Decoding follows the official loaders (PIL ``Image.open(...).convert("RGB")``, torchvision ``Resize`` on
the PIL image): see :class:`lnlbench.types.ImageFiles` for the canvas and ``DatasetInfo.crop_size`` for
the crop the device takes from it. A host array (``stream: true`` on CIFAR) streams the same way, without
the decode: rows gathered by the workers, pinned, moved per batch.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import LnlError
from .types import ImageFiles


def decode_file(path: str, size: int) -> np.ndarray:
    """One image as an (size, size, 3) uint8 canvas: RGB, short side resized to ``size``, central square."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as tf

    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise LnlError(f"cannot decode image {path}: {exc}; replace or remove the file") from None
    return np.asarray(tf.center_crop(tf.resize(img, size), [size, size]))


class ImageSource(Dataset):
    """Rows of a set, decoded: item = an array of rows → their uint8 (B, C, H, W) batch on the host."""

    def __init__(self, images: ImageFiles | np.ndarray):
        self.files = images if isinstance(images, ImageFiles) else None
        self.array = None if self.files is not None else np.asarray(images)
        n, h, w, c = images.shape if self.array is None or self.array.ndim == 4 else (*self.array.shape, 1)
        self.shape = (n, c, h, w)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray) -> torch.Tensor:
        rows = np.asarray(rows, dtype=np.int64)
        if self.array is not None:
            a = self.array[rows]
            a = a[..., None] if a.ndim == 3 else a
            return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
        if len(rows) == 0:
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        size = self.files.size
        out = np.stack([decode_file(self.files.path(r), size) for r in rows])
        return torch.from_numpy(out.transpose(0, 3, 1, 2).copy())


class _Plan(Sampler):
    """The batches (arrays of source rows) of one planned pass, in order."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Stream:
    """One source's decoders: a DataLoader per planned pass, and the threads of on-demand requests."""

    def __init__(self, source: ImageSource, device: torch.device, workers: int):
        self.source, self.device, self.workers = source, device, max(1, int(workers))
        self.pin = device.type == "cuda"
        self._threads: ThreadPoolExecutor | None = None
        # per running planned pass, its batch in hand: (idx as yielded, the decoded batch, its source rows);
        # shared by every view of the source, so a subset or a concatenation finds them too
        self.ready: dict[int, tuple[torch.Tensor, torch.Tensor, np.ndarray]] = {}

    def loader(self, batches: list[np.ndarray]) -> DataLoader:
        """The pass's DataLoader: each item one batch of rows, decoded in a worker, pinned."""
        return DataLoader(self.source, batch_size=None, sampler=_Plan(batches), num_workers=self.workers,
                          pin_memory=self.pin, prefetch_factor=2)

    def submit(self, rows: np.ndarray) -> Future:
        """Decode ``rows`` on the threads (split over them); a future of the pinned host batch."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="lnlbench-decode")
        parts = np.array_split(rows, max(1, min(self.workers, len(rows))))
        futures = [self._threads.submit(self.source.__getitem__, p) for p in parts]
        return self._threads.submit(self._join, futures)

    def _join(self, futures: list[Future]) -> torch.Tensor:
        out = torch.cat([f.result() for f in futures])
        return out.pin_memory() if self.pin else out

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=self.pin)

    def close(self) -> None:
        """Stop the decoding threads (also done at garbage collection)."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None


def _rows_of(key: Any, n: int) -> np.ndarray:
    if isinstance(key, torch.Tensor):
        key = key.detach().cpu().numpy()
    if isinstance(key, slice):
        return np.arange(n, dtype=np.int64)[key]
    rows = np.asarray(key)
    if rows.dtype == np.bool_:
        return np.flatnonzero(rows)
    return rows.astype(np.int64, copy=False).reshape(-1) if rows.ndim else rows.astype(np.int64).reshape(1)


class StreamedImages:
    """The uint8 (N, C, H, W) images of a set, decoded when indexed (see the module docstring)."""

    def __init__(self, stream: Stream, rows: np.ndarray | None = None):
        self.stream = stream
        self.rows = np.arange(len(stream.source), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        self._ahead: tuple[tuple[int, int], Future] | None = None  # the next slice, read ahead

    @classmethod
    def of(cls, images: ImageFiles | np.ndarray, device: torch.device, workers: int) -> StreamedImages:
        return cls(Stream(ImageSource(images), device, workers))

    # -- what a tensor answers ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.stream.source.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    @property
    def device(self) -> torch.device:
        return self.stream.device

    def take(self, idx: Any) -> StreamedImages:
        """The subset ``idx`` (positions in this set), still streamed."""
        return StreamedImages(self.stream, self.rows[_rows_of(idx, len(self))])

    def __getitem__(self, key: Any) -> torch.Tensor:
        ready = self.stream.ready
        for idx, x, _ in ready.values():
            if key is idx:
                return x
        pos = _rows_of(key, len(self))
        if ready:
            return self._from_ready(self.rows[pos])
        span = (key.start or 0, key.stop) if isinstance(key, slice) and key.step in (None, 1) else None
        ahead, self._ahead = self._ahead, None
        host = (ahead[1] if ahead is not None and span is not None and ahead[0] == span
                else self.stream.submit(self.rows[pos])).result()
        if span is not None and len(pos) and pos[-1] + 1 < len(self):  # a sequential pass: the next slice
            nxt = (int(pos[-1]) + 1, int(min(len(self), pos[-1] + 1 + len(pos))))
            self._ahead = (nxt, self.stream.submit(self.rows[nxt[0]:nxt[1]]))
        return self.stream.to_device(host)

    def _from_ready(self, rows: np.ndarray) -> torch.Tensor:
        """Source ``rows``: those in the batches in hand gathered on the device, the others decoded now."""
        parts = list(self.stream.ready.values())
        held = np.concatenate([r for _, _, r in parts])
        order = np.argsort(held, kind="stable")
        at = order[np.minimum(np.searchsorted(held[order], rows), len(held) - 1)]
        found = held[at] == rows
        x = torch.cat([x for _, x, _ in parts])
        if found.all():
            return x[torch.from_numpy(at).to(x.device)]
        out = torch.empty((len(rows), *x.shape[1:]), dtype=x.dtype, device=x.device)
        out[torch.from_numpy(np.flatnonzero(found)).to(x.device)] = x[torch.from_numpy(at[found]).to(x.device)]
        miss = np.flatnonzero(~found)
        out[torch.from_numpy(miss).to(x.device)] = self.stream.to_device(self.stream.submit(rows[miss]).result())
        return out

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """``torch.cat`` of streamed sets is a streamed set (TSSD joins train and golden): over their one
        source, or over a new one holding exactly their images."""
        parts = args[0] if args else (kwargs or {}).get("tensors", ())
        if func is torch.cat and parts and all(isinstance(p, StreamedImages) for p in parts) \
                and not (kwargs or {}).get("dim", 0):
            first = parts[0].stream
            if all(p.stream is first for p in parts):
                return StreamedImages(first, np.concatenate([p.rows for p in parts]))
            joined = _join_sources([p.stream.source for p in parts], [p.rows for p in parts])
            if joined is not None:
                return StreamedImages.of(joined, first.device, first.workers)
        raise LnlError(f"{getattr(func, '__name__', func)} is not available on streamed images; index them "
                       "first (x[idx]) to get a device batch")

    # -- passes ------------------------------------------------------------------------------------
    def planned(self, batches: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Yield ``batches`` (index tensors over this set) while a DataLoader decodes them ahead; a batch
        indexed as yielded (or samples of the batches in hand) is served from the workers."""
        if not batches:
            return
        flat = torch.cat([b.reshape(-1) for b in batches]).cpu().numpy()  # one host sync for the pass
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):  # not positions in this set: unplanned
            yield from batches
            return
        rows = np.split(self.rows[flat], np.cumsum([b.numel() for b in batches])[:-1])
        key, ready = object(), self.stream.ready
        try:
            for b, r, host in zip(batches, rows, self.stream.loader(rows)):
                ready[id(key)] = (b, self.stream.to_device(host), r)
                yield b
        finally:
            ready.pop(id(key), None)

    def sequential(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The whole set in order, as device batches (the engine's evaluation passes)."""
        idx = [torch.arange(s, min(s + batch_size, len(self))) for s in range(0, len(self), batch_size)]
        for b in self.planned(idx):
            yield self[b]


def loader_workers(requested: int | None) -> int:
    """DataLoader workers of a trial: ``requested``, else the trial's CPUs (torch's thread count, which the
    Ray worker sets to ``cpus_per_worker``)."""
    return int(requested) if requested else max(1, torch.get_num_threads())


def _join_sources(sources: list[ImageSource], rows: list[np.ndarray]) -> ImageFiles | np.ndarray | None:
    """The images ``rows`` of each source, one after the other, as one image set (None: they do not fit)."""
    if all(s.files is not None for s in sources) and len({s.files.size for s in sources}) == 1:
        return ImageFiles(np.concatenate([s.files.paths[r] for s, r in zip(sources, rows)]), sources[0].files.size)
    if all(s.array is not None for s in sources) and len({s.array.shape[1:] for s in sources}) == 1:
        return np.concatenate([s.array[r] for s, r in zip(sources, rows)])
    return None


def image_sets(device: torch.device, streamed: bool, workers: int) -> Callable[..., torch.Tensor | StreamedImages]:
    """The engine's ``images(x, idx=None)``: a set's uint8 (N, C, H, W) images on the device, or (``streamed``:
    file-backed datasets, ``stream: true``) streamed to it. Each set gets its own source holding only its
    images (a path list is cheap to cut), so the train set reaches neither the golden nor the held-out
    validation images, as on the device."""
    def images(x: Any, idx: np.ndarray | None = None) -> torch.Tensor | StreamedImages:
        part = x if idx is None else x[idx]
        if not streamed:
            return torch.from_numpy(part).permute(0, 3, 1, 2).contiguous().to(device)
        return StreamedImages.of(part, device, workers)
    return images


def streamed_workers(train: Any) -> int:
    """DataLoader workers of a built trial's train set (0: held on the device, or not built yet)."""
    x = getattr(train, "x", None)
    return x.stream.workers if isinstance(x, StreamedImages) else 0
