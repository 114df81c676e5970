"""The training loop of ``minilstm.train``: data -> batches -> this rank's gradient part -> the sum over the ranks ->
the optimizer -> the run's files (``run_outputs``), with the NaN check, the stop signals, the time budget, the
snapshots and the validation."""

import math
import signal
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from .architecture import Architecture
from .backends import get_backend
from .cli import (
    EXIT_INTERRUPTED,
)
from .data import Batch, Batches, Dataset, validation_rows
from .distributed import SINGLE_PROCESS
from .errors import MinilstmError
from .nn import dropout_key
from .optim import make_optimizer
from .pairs import read_pairs, resolve_pairs
from .run_outputs import Progress, ProgressBar, RunFiles, args_record, peak_memory_mib
from .schedules import Schedule
from .seq2seq import Seq2Seq
from .units import learn_units, parse_units
from .vocab import Vocab

EXIT_TERMINATED = 143
OUT_OF_TIME = 1  # the stop code of --max-minutes: below every signal's number, so that a signal wins the ranks' max
RANKS_READ_EVERY = 16  # steps between reads of a GPU's pending metrics when several ranks train together


class StopSignals:
    """SIGINT/SIGTERM ask training to stop at the next step boundary (checkpoint, then exit 130/143). A second
    SIGINT acts at once (KeyboardInterrupt); checkpoints are renamed into place whole, so that is safe too. Under
    mpiexec every rank gets the signal; only rank 0 (``announce``) says so."""

    def __init__(self, announce: bool = True):
        self.received = None
        self.announce = announce

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.received = signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: stopping after this step (again to stop at once)", file=sys.stderr,
                  flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class TrainingClock:
    """Training wall time, which ``--max-minutes`` and ``--snapshot-minutes`` count. It starts with training, after the
    data is read and the model built (each run pays those apart from training, and unequally), so that equal-time
    runs of different configurations get the same training time; the steps (Numba's compilation in the first ones
    included), validation and checkpoint writes all count. The budget is this process's: a resumed run gets its
    ``--max-minutes`` afresh. The snapshots count the whole run's time (``earlier_seconds``: what the processes before
    a ``--resume`` trained, ``Progress.train_seconds``), so a resumed run's snapshots go on from where it stopped."""

    def __init__(self, max_minutes: float | None, snapshot_minutes: float | None, earlier_seconds: float = 0.0):
        self.max_seconds = None if max_minutes is None else 60.0 * max_minutes
        self.snapshot_minutes = snapshot_minutes
        self.earlier_seconds = earlier_seconds
        self.started = None
        # the number of the last snapshot mark passed: marks are whole multiples of snapshot_minutes
        self.last_mark = None if snapshot_minutes is None else math.floor(earlier_seconds / 60 / snapshot_minutes)

    def start(self):
        self.started = time.perf_counter()

    def seconds(self) -> float:
        """This process's training time so far."""
        return 0.0 if self.started is None else time.perf_counter() - self.started

    def run_seconds(self) -> float:
        """The run's training time so far, all its processes."""
        return self.earlier_seconds + self.seconds()

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.seconds() >= self.max_seconds

    def snapshot_due(self) -> float | None:
        """The latest snapshot mark (in minutes) passed since the last snapshot, or None. A step that spans several
        marks (validation at an epoch's end may) gives one snapshot, at the latest of them."""
        if self.snapshot_minutes is None:
            return None
        mark = math.floor(self.run_seconds() / 60 / self.snapshot_minutes)
        if mark <= self.last_mark:
            return None
        self.last_mark = mark
        return round(mark * self.snapshot_minutes, 9)


def training_data(args) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The dataset and its training and validation rows: ``--validation-split`` of the pairs, the last ones as Keras
    does or, with ``--validation-split-mode random``, those of English sentences drawn with ``--seed``; or the pairs
    of ``--validation-data``, with every training pair of the same English sentences left out (the file has several
    translations per sentence). Vocabularies and lengths cover both parts, as in Keras."""
    pairs = resolve_pairs(args.data, args.num_samples)
    if args.validation_data is None:
        train_idx, val_idx = validation_rows(pairs, args.validation_split, args.validation_split_mode, args.seed)
        train_pairs = [pairs[k] for k in train_idx]
        dataset = Dataset.from_pairs(pairs, *unit_vocabularies(args.units, train_pairs, args.joint_units))
        if args.validation_split_mode == "random":
            sentences = len({pairs[k][0] for k in val_idx})
            print(f"Holding out the {len(val_idx):,} pairs of {sentences:,} English sentences drawn at random "
                  f"(--seed {args.seed}); no English sentence is in both parts", flush=True)
        return dataset, train_idx, val_idx
    val_pairs = read_pairs(args.validation_data)
    held_out = {english for english, _ in val_pairs}
    train_pairs = [pair for pair in pairs if pair[0] not in held_out]
    if not train_pairs:
        raise MinilstmError(f"every training pair has its English sentence in {args.validation_data}: nothing is "
                            "left to train on")
    print(f"Validating on the {len(val_pairs):,} pairs of {args.validation_data}; left out "
          f"{len(pairs) - len(train_pairs):,} training pairs with the same English sentences", flush=True)
    dataset = Dataset.from_pairs(train_pairs + val_pairs, *unit_vocabularies(args.units, train_pairs, args.joint_units))
    return dataset, np.arange(len(train_pairs)), np.arange(len(train_pairs), len(dataset))


def unit_vocabularies(units: str, train_pairs, joint: bool = False) -> tuple[Vocab | None, Vocab | None]:
    """The English and French vocabularies of ``--units`` other than characters, learnt from the training pairs
    alone (the held-out ones never shape them): one per language, or with ``joint`` one from both, used on both
    sides. (None, None) for characters, whose vocabularies ``Dataset.from_pairs`` takes from all the pairs, as
    Keras does."""
    if parse_units(units)[0] == "char":
        return None, None
    print(f"Learning {'joint ' if joint else ''}{units} units from the {len(train_pairs):,} training pairs",
          flush=True)
    english, french = (list(dict.fromkeys(side)) for side in zip(*train_pairs, strict=True))
    if joint:
        both = Vocab.from_units(learn_units(units, english + french))
        return both, both
    return Vocab.from_units(learn_units(units, english)), Vocab.from_units(learn_units(units, french))


def check_finite(model: Seq2Seq, loss: float | None, epoch: int, step: int):
    """Stop on NaN/Inf in the loss or any gradient (before the update) or any weight (after it), naming the step
    and the tensor, so that no checkpoint ever holds a non-finite number."""
    where = f"training diverged at epoch {epoch}, step {step}"
    advice = "lower --learning-rate (the checkpoints already written are intact)"
    if loss is not None and not math.isfinite(loss):
        raise MinilstmError(f"{where}: the loss is {loss}; {advice}")
    xp = model.backend.xp
    tensors, what = (model.grads, "the gradient of") if loss is not None else (model.params, "the update made")
    if not bool(xp.isfinite(tensors.flat).all()):
        bad = next(name for name, g in tensors.items() if not bool(xp.isfinite(g).all()))
        raise MinilstmError(f"{where}: {what} {bad} {'hold' if loss is None else 'holds'} NaN or Inf; {advice}")


def rank_part(model: Seq2Seq, batch: Batch, compute_grads: bool = True, dropout_seed: int | None = None,
              label_smoothing: float = 0.0):
    """This rank's loss sum and hits for ``batch`` and, with ``compute_grads``, its part of the gradient in
    ``model.grads`` (a mean over the global batch's positions, so the ranks' parts add up to the whole). A rank
    with no rows in the batch (a batch shorter than the number of ranks) adds zeros."""
    if batch.arrays is None:
        if compute_grads:
            model.grads.flat[...] = 0
        return 0.0, 0.0
    return model.forward_backward(*batch.arrays, compute_grads=compute_grads, positions=batch.positions,
                                  dropout_seed=dropout_seed, row_offset=batch.row_offset,
                                  source_lengths=batch.source_lengths, label_smoothing=label_smoothing)


def evaluate(model: Seq2Seq, batches: Batches, plan: list[np.ndarray], comm=SINGLE_PROCESS):
    """Loss and accuracy over the batches of ``plan``, counted as in training: Keras's val_loss / val_accuracy, or
    over real characters with --mask-padding. Each rank runs its rows; the per-batch sums are added over the ranks
    in one message and then over the batches in order, as one process adds them. One read-back at the end."""
    parts, positions = [], 0
    for batch in batches.epoch(plan):
        parts.append(rank_part(model, batch, compute_grads=False))
        positions += batch.positions
    loss_sum = correct = 0.0
    for batch_loss, batch_correct in comm.sum_metrics(parts):
        loss_sum = loss_sum + batch_loss
        correct = correct + batch_correct
    return float(loss_sum) / positions, float(correct) / positions


class PendingMetrics:
    """The training steps' losses and hits, kept where the backend computed them until they are read. Reading a
    GPU value waits for the GPU, so there they are read in bulk (progress bar refresh, checkpoint, epoch end); on the
    CPU reading is free and happens every step, which lets the NaN check name the exact step and tensor."""

    def __init__(self):
        self.steps = []

    def add(self, epoch, step, loss, correct, positions):
        self.steps.append((epoch, step, loss, correct, positions))

    def flush(self, progress: "Progress", model: Seq2Seq):
        for epoch, step, loss, correct, positions in self.steps:
            check_finite(model, float(loss) / positions, epoch, step)
            progress.loss_sum += float(loss)
            progress.correct += float(correct)
            progress.positions += positions
        if self.steps:
            check_finite(model, None, *self.steps[-1][:2])
        self.steps.clear()


class Training:
    """One run of ``minilstm.train``: the model, the optimizer, the batches and where training stands, on this
    rank. Data flows one way: ``training_data`` (text -> ids) -> ``Batches`` (this rank's rows of each batch) ->
    ``rank_part`` (its gradient part) -> the communicator (the sum over the ranks) -> the optimizer -> ``RunFiles``."""

    def __init__(self, args, resumed, comm):
        self.args, self.comm = args, comm
        self.backend = backend = get_backend(args.backend)
        if comm.size > 1 and not backend.name.startswith("cupy"):
            # Each rank's BLAS single-threaded, as in a thread shard: MINILSTM_THREADS threads per rank, no more, and
            # the same GEMM code a shard runs (2 ranks x 1 thread = 1 process x 2 shards, to the bit).
            self._blas_limit = threadpool_limits(1, user_api="blas")
        self.dataset, self.train_idx, self.val_idx = comm.agree(lambda: training_data(args))
        dataset = self.dataset
        comm.check_same({"settings": {k: v for k, v in args_record(args).items() if k != "out"},
                         "pair count": [len(dataset), len(self.train_idx), len(self.val_idx)],
                         "vocabularies": [dataset.input_vocab.chars, dataset.target_vocab.chars]})
        print(dataset.summary(), flush=True)
        init_seed, shuffle_seed = np.random.SeedSequence(args.seed).spawn(2)
        self.shuffle_rng = np.random.default_rng(shuffle_seed)
        self.model = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                             dataset.max_decoder_len, Architecture.from_args(args))
        self.batches = Batches(dataset, backend, args.mask_padding, comm.rank, comm.size)
        own = {"rmsprop": {"rho": args.rho, "epsilon": args.epsilon, "epsilon_inside_sqrt": args.epsilon_inside_sqrt},
               "adam": {"beta_1": args.beta_1, "beta_2": args.beta_2, "epsilon": args.epsilon},
               "sgd": {"momentum": args.momentum}}[args.optimizer]
        self.optimizer = make_optimizer(args.optimizer, backend, self.model.params.flat.size, self.model.dtype,
                                        learning_rate=args.learning_rate, clip_norm=args.clip_norm,
                                        schedule=self._schedule(resumed), **own)
        if resumed is None:
            self.model.initialize(np.random.default_rng(init_seed), args.init)
            self.progress = Progress()
        else:
            self._resume(resumed)
        comm.broadcast_array(self.model.params.flat)  # every rank starts from rank 0's weights and state
        for array in self.optimizer.state().values():
            comm.broadcast_array(array)
        print(f"Training on {len(self.train_idx)} pairs, validating on {len(self.val_idx)}; backend "
              f"{backend.describe()}, {args.dtype}, batch {args.batch_size}, latent {args.latent_dim}; writing to "
              f"{args.out}", flush=True)
        if not self.model.arch.is_example():
            enc, dec = self.model.encoder, self.model.decoder
            attention = "no attention" if args.attention == "none" else \
                f"{args.attention} attention {'with' if args.input_feed else 'without'} input feeding"
            arch = self.model.arch
            embedding = f", embeddings of {arch.embedding_dim}" if arch.embedding_dim else ""
            embedding += f" (dropout {arch.embedding_dropout})" if arch.embedding_dropout else ""
            embedding += f", output dropout {arch.output_dropout}" if arch.output_dropout else ""
            print(f"Model: {enc.num_layers}-layer {'bidirectional ' if enc.bidirectional else ''}encoder, "
                  f"{dec.num_layers}-layer decoder of {dec.units} units, dropout {enc.dropout} between layers, "
                  f"{attention}{embedding}", flush=True)
        if args.mask_padding:
            real = "characters" if self.dataset.target_vocab.is_chars else "tokens"
            print(f"--mask-padding: loss and accuracy count real {real} only (not comparable with the Keras-style "
                  "numbers of a run without it)", flush=True)
        self.val_plan = self.batches.plan(self.val_idx, 256, None)
        self.files = RunFiles(args.out, comm, args)
        self.files.forget_snapshots_after(self.progress.train_seconds)
        self.clock = TrainingClock(args.max_minutes, args.snapshot_minutes, self.progress.train_seconds)
        self.last_snapshot_step = None
        self.pending = PendingMetrics()
        self.show_progress = comm.is_root and (args.progress == "always" or (args.progress == "auto"
                                                                            and sys.stderr.isatty()))
        comm.on_lost_peer(f"{args.out / 'latest'} is intact; resume with: mpiexec -n {comm.size} python -m "
                          f"minilstm.train --resume {args.out}")

    def _schedule(self, resumed) -> Schedule:
        """The learning-rate schedule: a resumed run's as its checkpoint left it (settings and state, cosine's total
        steps included, so that a larger --epochs on --resume trains the extra steps at --min-learning-rate); else
        from the flags, cosine over --epochs times this data's batches per epoch."""
        stored = None if resumed is None else resumed.config["optimizer"].get("schedule")
        if stored is not None:
            stored = dict(stored)
            return Schedule.from_config(stored, stored.pop("state"))
        args = self.args
        total = args.epochs * len(self.batches.plan(self.train_idx, args.batch_size, None))
        return Schedule(args.lr_schedule, args.warmup_steps, total if args.lr_schedule == "cosine" else None,
                        args.min_learning_rate, args.plateau_factor, args.plateau_patience)

    def _resume(self, resumed):
        args, training = self.args, resumed.config["training"]
        if resumed.model.config() != self.model.config():
            raise MinilstmError(f"cannot resume {args.resume}: its data ({args.data or 'the built-in subset'}) no "
                                "longer gives the vocabularies and lengths the checkpoint was trained on")
        self.model.set_weights(resumed.model.get_weights())
        self.progress = Progress(**training["progress"])
        self.optimizer.load_state(resumed.optimizer_state)
        self.optimizer.iterations = resumed.config["optimizer"]["iterations"]
        if self.progress.epoch_rng_state is not None:
            self.shuffle_rng.bit_generator.state = self.progress.epoch_rng_state
        print(f"Resuming {args.resume} after epoch {self.progress.epoch}, step {self.progress.step}", flush=True)
        ranks = training.get("ranks", 1)
        if ranks != self.comm.size:
            print(f"The run was trained on {ranks} rank{'s' if ranks > 1 else ''}, it goes on with {self.comm.size}: "
                  "the gradient parts are now summed in another order, so the weights will not be bit-identical to "
                  "an uninterrupted run", flush=True)

    def run(self) -> int:
        """Train the remaining epochs; the exit code (130/143 when a signal stopped it, 0 at the end of the epochs or
        of the --max-minutes budget)."""
        args, progress = self.args, self.progress
        self.files.history(progress)
        first_epoch = progress.epoch + 1
        self.clock.start()
        with StopSignals(announce=self.comm.is_root) as signals:
            for epoch in range(first_epoch, args.epochs + 1):
                # the budget may run out during the previous epoch's validation: latest/ is written, stop here
                if epoch > first_epoch and self.comm.max_int(OUT_OF_TIME if self.clock.out_of_time() else 0):
                    return self.stop_for_time(f"at the end of epoch {epoch - 1}")
                stopped_by = self.train_epoch(epoch, signals)
                if stopped_by == OUT_OF_TIME:
                    return self.stop_for_time(f"at epoch {epoch}, step {self.progress.step}")
                if stopped_by:
                    return EXIT_INTERRUPTED if stopped_by == signal.SIGINT else EXIT_TERMINATED
                if self.patience_exhausted(epoch):
                    break
        self.comm.finish()
        if first_epoch > args.epochs:
            print("Nothing to train: the run already has all its epochs (pass a larger --epochs to go on)")
        self.files.checkpoint("final", self.model, self.optimizer, self.progress)
        if args.snapshot_minutes is not None:
            self.snapshot(mark=None)
        self.files.plot(self.progress.history)
        print(f"Checkpoints: {args.out / 'final'} (last epoch), {args.out / 'best'} (lowest val_loss "
              f"{self.progress.best_val_loss:.4f}); resume or extend with --resume {args.out}")
        if self.comm.is_root:
            self.print_decodes()
        return 0

    def stop_for_time(self, where: str) -> int:
        """The end of the --max-minutes budget, latest/ already written: a last snapshot (with --snapshot-minutes),
        one line, exit code 0."""
        args = self.args
        self.comm.finish()
        if args.snapshot_minutes is not None:
            self.snapshot(mark=None)
        print(f"Time budget: stopped {where}, {self.clock.seconds() / 60:.2f} minutes into training "
              f"(--max-minutes {args.max_minutes:g}); saved {args.out / 'latest'}. Resume with: {self.command()} "
              f"--resume {args.out}", flush=True)
        return 0

    def snapshot(self, mark: float | None, epoch_done: bool = False):
        """Save the weights into snapshots/ (``mark``: the snapshot mark passed, None for the one where training
        ends), unless this step already has its snapshot. ``epoch_done``: taken after an epoch's last step, before
        its validation; recorded as the end-of-training snapshot would record the same weights (epoch done, step 0),
        since that one is then skipped."""
        if self.last_snapshot_step == self.optimizer.iterations:
            return
        self.last_snapshot_step = self.optimizer.iterations
        progress = self.progress
        epoch, step_in_epoch = (progress.epoch + 1, 0) if epoch_done else (progress.epoch, progress.step)
        self.files.snapshot(self.model, {"minutes": self.clock.run_seconds() / 60, "mark": mark,
                                         "epoch": epoch, "step_in_epoch": step_in_epoch,
                                         "step": self.optimizer.iterations})

    def train_epoch(self, epoch: int, signals: StopSignals) -> int:
        """One epoch (from where a resumed run stopped), validation, the epoch's checkpoints and the snapshots due;
        the signal that stopped it or ``OUT_OF_TIME`` (after writing latest/), else 0."""
        args, progress, model, comm = self.args, self.progress, self.model, self.comm
        if progress.step == 0:
            progress.epoch_rng_state = self.shuffle_rng.bit_generator.state
        plan = self.batches.plan(self.train_idx, args.batch_size, self.shuffle_rng)
        bar = ProgressBar(len(plan), self.show_progress)
        started = time.perf_counter()
        steps_run = 0
        for step, batch in enumerate(self.batches.epoch(plan, start=progress.step), start=progress.step + 1):
            steps_run += 1
            # Dropout masks from (seed, optimizer step): a resumed run draws the ones it would have drawn.
            batch_loss, batch_correct = rank_part(model, batch, dropout_seed=dropout_key(args.seed,
                                                                                         self.optimizer.iterations),
                                                  label_smoothing=args.label_smoothing)
            comm.allreduce_sum(model.grads.flat)
            batch_loss, batch_correct = comm.sum_metrics([(batch_loss, batch_correct)])[0]
            if self.backend.cheap_sync:  # check before the update: a NaN gradient never reaches the weights
                check_finite(model, float(batch_loss) / batch.positions, epoch, step)
            self.optimizer.step(model.params.flat, model.grads.flat)
            progress.step = step
            progress.train_seconds = self.clock.run_seconds()
            self.pending.add(epoch, step, batch_loss, batch_correct, batch.positions)
            if self.backend.cheap_sync or self.metrics_due(step, bar):
                self.pending.flush(progress, model)
                bar.update(step, progress.loss_sum / progress.positions, progress.correct / progress.positions)
            # every rank stops after the same step, for a signal or (lower code) the end of the time budget
            stop = comm.max_int(signals.received or (OUT_OF_TIME if self.clock.out_of_time() else 0))
            if stop:
                self.pending.flush(progress, model)
                bar.close()
                self.files.checkpoint("latest", model, self.optimizer, progress)
                if stop == OUT_OF_TIME:
                    return stop
                comm.finish()
                if comm.is_root:
                    print(f"{signal.Signals(stop).name}: stopped at epoch {epoch}, step {step}; saved "
                          f"{args.out / 'latest'}. Resume with: {self.command()} --resume {args.out}",
                          file=sys.stderr, flush=True)
                return stop
            mark = self.clock.snapshot_due()
            if mark is not None:
                self.pending.flush(progress, model)  # checks for NaN: no snapshot holds a non-finite number
                self.snapshot(mark, epoch_done=step == len(plan))
            if args.checkpoint_every and self.optimizer.iterations % args.checkpoint_every == 0 \
                    and step < len(plan):
                self.pending.flush(progress, model)
                self.files.checkpoint("latest", model, self.optimizer, progress)
        self.pending.flush(progress, model)
        self.backend.synchronize()
        train_seconds = time.perf_counter() - started
        bar.close()
        self.end_epoch(epoch, started, train_seconds, steps_run)
        return 0

    def metrics_due(self, step: int, bar: ProgressBar) -> bool:
        """When a GPU run reads its pending metrics (and so checks them for NaN): when the progress bar redraws, or,
        on several ranks, every ``RANKS_READ_EVERY`` steps on all of them alike, so that all stop at the same step."""
        if self.comm.size == 1:
            return bar.due()
        return step % RANKS_READ_EVERY == 0

    def end_epoch(self, epoch: int, started: float, train_seconds: float, steps_run: int):
        """Validate, record the epoch (history.jsonl, its line), write best/ (on a new lowest val_loss) and latest/."""
        args, progress = self.args, self.progress
        val_loss, val_accuracy = evaluate(self.model, self.batches, self.val_plan, self.comm)
        schedule = self.optimizer.schedule
        record = {"epoch": epoch, "loss": progress.loss_sum / progress.positions,
                  "accuracy": progress.correct / progress.positions, "val_loss": val_loss,
                  "val_accuracy": val_accuracy, "learning_rate": schedule.learning_rate,
                  "seconds": time.perf_counter() - started,
                  "ms_per_step": 1000 * train_seconds / max(1, steps_run), "peak_memory_mib": peak_memory_mib()}
        self.progress = progress = Progress(epoch=epoch, epoch_rng_state=self.shuffle_rng.bit_generator.state,
                                            best_val_loss=progress.best_val_loss, history=[*progress.history, record],
                                            train_seconds=self.clock.run_seconds())
        self.files.history(progress)
        scheduled = schedule.name != "constant" or schedule.warmup_steps  # the example's line has no rate
        print(f"Epoch {epoch}/{args.epochs} - {record['seconds']:.1f}s {record['ms_per_step']:.0f}ms/step - "
              f"loss: {record['loss']:.4f} - accuracy: {record['accuracy']:.4f} - val_loss: {val_loss:.4f} - "
              f"val_accuracy: {val_accuracy:.4f}" + (f" - lr: {schedule.learning_rate:.4g}" if scheduled else ""),
              flush=True)
        if schedule.end_epoch(val_loss):
            epochs = f"{schedule.plateau_patience} epoch{'s' if schedule.plateau_patience > 1 else ''}"
            print(f"Plateau: val_loss has not improved for {epochs}; the learning rate "
                  f"is multiplied by {schedule.plateau_factor} (now {schedule.scale:g} x --learning-rate)", flush=True)
        if val_loss < progress.best_val_loss:
            progress.best_val_loss = val_loss
            self.files.checkpoint("best", self.model, self.optimizer, progress, record)
        self.files.checkpoint("latest", self.model, self.optimizer, progress)

    def patience_exhausted(self, epoch: int) -> bool:
        progress, patience = self.progress, self.args.patience
        best_epoch = min(progress.history, key=lambda h: h["val_loss"])["epoch"]
        if patience and epoch - best_epoch >= patience:
            print(f"Early stop: val_loss has not improved for {patience} epochs (best "
                  f"{progress.best_val_loss:.4f} at epoch {best_epoch})", flush=True)
            return True
        return False

    def print_decodes(self):
        """The example's ending: greedy decodes of the first ``--num-decodes`` training inputs."""
        n = min(self.args.num_decodes, len(self.train_idx))
        if n > 0:
            inputs = self.dataset.input_texts[:n]
            for text, decoded in zip(inputs, self.model.translate(inputs, split_sentences=False), strict=True):
                print("-")
                print("Input sentence:", text)
                print("Decoded sentence:", decoded)

    def command(self) -> str:
        launcher = f"mpiexec -n {self.comm.size} " if self.comm.size > 1 else ""
        return f"{launcher}python -m minilstm.train"
