"""Data-parallel training: the one seam between the training loop and the other processes of a run.

``mpiexec -n N python -m minilstm.train ...`` starts N copies of the command (ranks). Each rank takes its rows of
every global batch (``data.Batches``), computes its part of the gradient, and the ranks add their parts up with one
allreduce over the flat gradient buffer, so every rank applies the same RMSprop step to the same weights. The loop
talks to a communicator and never asks which one it has:

- ``SingleProcess``: one rank, every operation a no-op (a plain ``python -m minilstm.train``; nothing changes);
- ``MPICommunicator``: host arrays through MPI (mpi4py), for the CPU backends;
- ``NcclCommunicator``: device arrays through NCCL (``cupy.cuda.nccl``), one GPU per rank, for ``--backend cupy``;
  its unique id is handed out over MPI, which still carries the few host-side messages.

Errors stay one line. A check that every rank makes on the same data (the settings, the NaN check after the
allreduce) raises on every rank at once and only rank 0 prints it; ``agree`` turns a step that may fail on one rank
only (reading the data or a checkpoint) into such a check. A rank that ends without the others (killed, or an error
of its own) ends the job within seconds: MPICH's ``mpiexec`` ends it (no rank calls MPI_Finalize, which would wait
for the lost one, before a whole run is done); a survivor that notices first says so in one line, from MPI's error
(``LostPeer``) or from its own watch on the ranks of its machine (``_PeerWatch``).
"""

import hashlib
import json
import os
import select
import socket
import sys
import threading
import time

import numpy as np

from .errors import MinilstmError

# Set by the launchers for every rank they start: MPICH's and Intel MPI's hydra, Open MPI.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK")
EXIT_PEER_LOST = 1
PEER_GRACE_SECONDS = 2.0  # a peer that exits is only a lost peer if this rank has not finished by then
INSTALL_HINT = 'pip install "minilstm[mpi]" (mpi4py and an MPI library)'


def _launcher_value(names) -> int | None:
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def launched_ranks() -> int:
    """How many ranks mpiexec started (1 when it did not start us)."""
    return _launcher_value(LAUNCHER_SIZE_VARIABLES) or 1


class SingleProcess:
    """One process, no peers: sums are the values themselves."""

    rank, size, local_rank = 0, 1, 0
    is_root = True

    def describe(self) -> str | None:
        return None

    def allreduce_sum(self, array):
        """Sum ``array`` over the ranks, in place (a host array for MPI, a device array for NCCL)."""
        return array

    def sum_metrics(self, pairs: list) -> list:
        """``[(loss_sum, hits), ...]`` summed element-wise over the ranks, in one message."""
        return pairs

    def max_int(self, value: int) -> int:
        """The largest of the ranks' ``value``: a decision every rank takes together (stop after this step)."""
        return value

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (a small Python object)."""
        return obj

    def broadcast_array(self, array):
        """Rank 0's ``array`` copied into every rank's, in place."""
        return array

    def agree(self, function):
        """``function()`` on every rank; if it raises ``MinilstmError`` on any rank, every rank raises the first
        rank's error, so all stop together and one message is printed."""
        return function()

    def check_same(self, facts: dict):
        """Stop every rank with one line if any rank's ``facts`` differ from rank 0's."""

    def exclusive(self):
        """A context in which a lost peer cannot end this rank (a checkpoint write finishes first)."""
        return _NO_LOCK

    def finish(self):
        """This rank is done with its peers: from now on, one that exits is no longer a lost peer."""

    def on_lost_peer(self, hint: str):
        """What the line about a lost peer adds (how to resume)."""

    def close(self):
        """The run ended normally on every rank: leave MPI in order (waits for the other ranks)."""


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NO_LOCK = _NoLock()
SINGLE_PROCESS = SingleProcess()


class MPICommunicator(SingleProcess):
    """``COMM_WORLD`` through mpi4py; arrays are host (numpy) arrays."""

    def __init__(self, MPI):
        self.MPI = MPI
        self.comm = _LostPeerErrors(MPI)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        self.node_name = socket.gethostname()
        node_ranks = node.allgather((self.rank, os.getpid()))
        node.Free()
        self._watch = _PeerWatch(self.rank, [peer for peer in node_ranks if peer[0] != self.rank])
        self.comm.watch = self._watch

    def describe(self) -> str:
        return f"data-parallel: {self.size} ranks (MPI)"

    def allreduce_sum(self, array):
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        return array

    def sum_metrics(self, pairs: list) -> list:
        table = np.array([[float(loss), float(hits)] for loss, hits in pairs], dtype=np.float64).reshape(-1, 2)
        self.comm.Allreduce(self.MPI.IN_PLACE, table, op=self.MPI.SUM)
        return [(loss, hits) for loss, hits in table]

    def max_int(self, value: int) -> int:
        return self.comm.allreduce(int(value), op=self.MPI.MAX)

    def broadcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def broadcast_array(self, array):
        self.comm.Bcast(array, root=0)
        return array

    def agree(self, function):
        try:
            result, error = function(), None
        except MinilstmError as e:
            result, error = None, str(e)
        errors = self.comm.allgather(error)
        failed = [(rank, message) for rank, message in enumerate(errors) if message is not None]
        if failed:
            rank, message = failed[0]
            raise MinilstmError(message if rank == 0 else f"rank {rank}: {message}")
        return result

    def check_same(self, facts: dict):
        ours = {key: _digest(value) for key, value in facts.items()}
        root = self.broadcast(ours)
        differing = sorted(key for key in ours if ours[key] != root[key])
        report = self.comm.allgather(differing)
        bad = [(rank, keys) for rank, keys in enumerate(report) if keys]
        if bad:
            listed = "; ".join(f"rank {rank}: {', '.join(keys)}" for rank, keys in bad)
            raise MinilstmError(f"the ranks do not agree with rank 0 on the run ({listed}): every rank must be "
                                "started with the same flags and read the same data file")

    def exclusive(self):
        return self._watch.lock

    def finish(self):
        self._watch.finished = True

    def on_lost_peer(self, hint: str):
        self._watch.hint = hint

    def close(self):
        self.finish()
        self.MPI.Finalize()


class LostPeer(MinilstmError):
    """Another rank is gone: every surviving rank says so (not only rank 0, which may be the lost one)."""


class _LostPeerErrors:
    """``COMM_WORLD`` with MPI's errors returned instead of fatal, and turned into one ``LostPeer`` line: MPICH
    notices a peer that died during a collective and would abort this rank with a 20-line error stack."""

    def __init__(self, MPI):
        self._comm, self._MPI = MPI.COMM_WORLD, MPI
        self._comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.watch = None

    def __getattr__(self, name):
        attribute = getattr(self._comm, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            try:
                return attribute(*args, **kwargs)
            except self._MPI.Exception as e:
                reason = e.Get_error_string().splitlines()[0].rstrip(" ,:")
                hint = self.watch.hint if self.watch is not None else ""
                raise LostPeer(f"another rank ended before the run did (killed?; MPI says: {reason}). {hint}") \
                    from None

        return call


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class _PeerWatch:
    """A thread that notices when a rank on the same machine exits before this one is done (``kill -9``, a crash, an
    error only it saw). MPICH's ``mpiexec`` ends such a job itself, by killing the processes it started; where
    nothing does (other launchers, ranks started through a wrapper script that the launcher kills instead) the others
    would wait in their next allreduce for ever, spinning. After a grace period (every rank leaves at the end, not
    all at the same instant) the lowest surviving rank prints one line; then every survivor exits, after any
    checkpoint write in progress has finished (``lock``). Linux only (``pidfd_open``); elsewhere nothing watches."""

    def __init__(self, rank: int, peers: list[tuple[int, int]]):
        self.rank = rank
        self.finished = False
        self.hint = ""
        self.lock = threading.Lock()
        self.pidfds = {}
        for peer_rank, pid in peers:
            try:
                self.pidfds[os.pidfd_open(pid)] = peer_rank
            except (AttributeError, OSError):  # not Linux >= 5.3, or already gone
                return
        if self.pidfds:
            threading.Thread(target=self._run, name="minilstm-peer-watch", daemon=True).start()

    def _run(self):
        poller = select.poll()
        for fd in self.pidfds:
            poller.register(fd, select.POLLIN)
        poller.poll()  # returns when a peer has exited
        time.sleep(PEER_GRACE_SECONDS)  # every rank leaves at the end (or on a shared error): not a loss then
        if self.finished:
            return
        lost = sorted(rank for fd, rank in self.pidfds.items() if select.select([fd], [], [], 0)[0])
        survivors = (set(self.pidfds.values()) - set(lost)) | {self.rank}
        with self.lock:
            if self.rank == min(survivors):
                os.write(2, f"error: rank {', '.join(map(str, lost))} ended before the run did (killed?); stopping "
                            f"the other ranks. {self.hint}\n".encode())
            os._exit(EXIT_PEER_LOST)


def connect() -> SingleProcess:
    """The communicator for this process: MPI when mpiexec started several ranks, else ``SingleProcess`` (then
    mpi4py is not even imported)."""
    size = launched_ranks()
    if size == 1:
        return SingleProcess()
    try:
        import mpi4py

        # No MPI_Finalize at exit: it waits for every rank, so a rank leaving on an error of its own would hang
        # there; the launcher ends a job whose rank exits without it. ``close`` finalizes after a whole run.
        mpi4py.rc.finalize = False
        from mpi4py import MPI
    except ImportError as e:
        if _launcher_value(LAUNCHER_RANK_VARIABLES) in (0, None):  # one line for the whole job
            print(f"error: started by mpiexec with {size} ranks, but mpi4py does not import ({e}); "
                  f"{INSTALL_HINT}, or run without mpiexec", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    if MPI.COMM_WORLD.Get_size() == 1:
        return SingleProcess()
    return MPICommunicator(MPI)


def gpu_count() -> int:
    """CUDA devices this process can see (0 without CuPy or a driver)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - not installed, no driver, no device: all mean none
        return 0


def for_backend(comm: SingleProcess, backend_name: str) -> SingleProcess:
    """The communicator ``backend_name`` needs: NCCL for the GPU backends when there are several ranks. Call it
    before the backend is made: it chooses this rank's GPU (its rank on its machine)."""
    if not isinstance(comm, MPICommunicator) or not backend_name.startswith("cupy"):
        return comm

    def gpus_enough():
        gpus = gpu_count()
        if gpus < comm.local_size:
            raise MinilstmError(f"--backend {backend_name}: {comm.local_size} ranks on {comm.node_name} but "
                                f"{gpus} GPU{'s' if gpus != 1 else ''} there; each rank needs a GPU of its own "
                                f"(start at most {gpus} ranks per machine, or use a CPU backend)")
        from cupy.cuda import nccl

        if not nccl.available:
            raise MinilstmError("NCCL is not available to CuPy here; pip install nvidia-nccl-cu12 (or -cu13, as "
                                "your CuPy) to train on several GPUs")

    comm.agree(gpus_enough)  # every rank passes these checks before any of them waits in NCCL's setup
    return NcclCommunicator(comm)


class NcclCommunicator(MPICommunicator):
    """Device arrays summed by NCCL on the current CUDA stream (no host copy, no synchronisation); one GPU per rank
    (the rank's number on its machine); MPI hands out NCCL's unique id and carries the host-side messages."""

    def __init__(self, mpi: MPICommunicator):
        self.__dict__.update(mpi.__dict__)
        import cupy
        from cupy.cuda import nccl

        self.cupy, self.nccl = cupy, nccl
        cupy.cuda.Device(self.local_rank).use()
        unique_id = self.broadcast(nccl.get_unique_id() if self.is_root else None)
        self.gpus = nccl.NcclCommunicator(self.size, unique_id, self.rank)
        self.types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def describe(self) -> str:
        return f"data-parallel: {self.size} ranks (MPI), gradients summed by NCCL"

    def allreduce_sum(self, array):
        stream = self.cupy.cuda.get_current_stream().ptr
        self.gpus.allReduce(array.data.ptr, array.data.ptr, array.size, self.types[array.dtype], self.nccl.NCCL_SUM,
                            stream)
        return array

    def sum_metrics(self, pairs: list) -> list:
        xp = self.cupy
        table = xp.stack([xp.stack([xp.asarray(loss, dtype=xp.float64), xp.asarray(hits, dtype=xp.float64)])
                          for loss, hits in pairs]).reshape(-1, 2)
        self.allreduce_sum(table)
        return [(table[k, 0], table[k, 1]) for k in range(len(pairs))]

    def broadcast_array(self, array):
        host = self.cupy.asnumpy(array)
        self.comm.Bcast(host, root=0)
        array[...] = self.cupy.asarray(host)
        return array
