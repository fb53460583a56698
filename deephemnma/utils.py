"""Small shared helpers: atomic outputs, progress reporting, device choice,
torchrun process groups."""
import contextlib
import os
import sys
import tempfile
import time


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if
    the block succeeds, so an interrupted or failed write never leaves a
    half-written output behind."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600: give the output the user's umask, as open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def clock_text(seconds):
    """``HH:MM:SS`` of a duration in seconds (hours past 24 as they are);
    ``--:--:--`` when unknown (inf or NaN)."""
    if seconds is None or not seconds < float("inf"):      # inf, NaN
        return "--:--:--"
    s = int(max(seconds, 0.0))
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """A dependency-free progress line: ``label  n/total  rate unit/s  ETA``.

    Writes to stderr at most every ``interval`` seconds (always at the end).
    ``quiet=True`` silences it (tests). ``after(elapsed, left)``: the seconds
    of the work that follows this bar (e.g. a training run's later epochs),
    from this bar's elapsed and remaining seconds; with it the line also
    shows the whole run's ETA (``run ETA``: this bar's remaining time plus
    that). ``clock``: the time source (seconds)."""

    def __init__(self, total, label="", unit="img", interval=1.0, quiet=None,
                 stream=None, after=None, clock=time.perf_counter):
        self.total = int(total)
        self.label = label
        self.unit = unit
        self.interval = interval
        self.stream = stream or sys.stderr
        if quiet is None:
            quiet = os.environ.get("DEEPHEMNMA_QUIET", "") not in ("", "0")
        self.quiet = quiet
        self.after = after
        self.clock = clock
        self.n = 0
        self.start = clock()
        self._last = 0.0

    @property
    def elapsed(self):
        return self.clock() - self.start

    @property
    def rate(self):
        return self.n / max(self.elapsed, 1e-9)

    @property
    def left(self):
        """Seconds until this bar ends at the rate so far (inf before any)."""
        rate = self.rate
        return (self.total - self.n) / rate if rate > 0 else float("inf")

    @property
    def run_left(self):
        """Seconds until the whole run ends (None without ``after``)."""
        if self.after is None:
            return None
        left = self.left
        return left + self.after(self.elapsed, left) if left < float("inf") else left

    def update(self, k=1, extra=""):
        self.n += k
        now = self.clock()
        if not self.quiet and (now - self._last >= self.interval or self.n >= self.total):
            self._last = now
            self._print(extra)

    def line(self, extra=""):
        """The progress line (without the leading carriage return)."""
        run = "" if self.after is None else f" run ETA {clock_text(self.run_left)}"
        return (f"{self.label} {self.n}/{self.total} "
                f"{self.rate:8.1f} {self.unit}/s  ETA {clock_text(self.left)}{run} {extra}")

    def _print(self, extra=""):
        msg = "\r" + self.line(extra)
        self.stream.write(msg)
        _open_lines.add(self.stream)
        if self.n >= self.total:
            self.stream.write("\n")
            _open_lines.discard(self.stream)
        self.stream.flush()

    def close(self):
        if not self.quiet and self.stream in _open_lines:
            self.stream.write("\n")
            _open_lines.discard(self.stream)


_open_lines = set()   # streams whose last progress line has no newline yet


def end_progress_lines():
    """End any unfinished progress line, so that the next message (an error)
    starts on its own line."""
    for stream in list(_open_lines):
        stream.write("\n")
        stream.flush()
    _open_lines.clear()


def resolve_device(device=None):
    """'auto' / None -> 'cuda' when available else 'cpu'; otherwise as given.
    An unknown or unavailable device is an InputError (one line for the user)."""
    import torch
    from .errors import InputError
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"--device {device}: unknown device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} GPU(s)")
    return dev


def distributed(start=True, backend=None):
    """(rank, world size, torch.distributed or None) of this process.

    Under torchrun (RANK and WORLD_SIZE in the environment) and with ``start``,
    the process group is started when it is not yet: ``backend`` ('gloo',
    'nccl'; None: nccl when CUDA is available, else gloo); with nccl the
    process's GPU becomes its LOCAL_RANK. Without a started process group:
    (0, 1, None)."""
    import torch.distributed as dist
    if not dist.is_available():
        return 0, 1, None
    if start and "RANK" in os.environ and "WORLD_SIZE" in os.environ \
            and not dist.is_initialized():
        import torch
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist
    return 0, 1, None
