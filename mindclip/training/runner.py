"""The training loop behind ``run_mindformer.py --run_mode train|finetune`` and
``Trainer.train()``, for any model family: the family supplies the objective and the
per-sample text columns; this module supplies data, optimizer, checkpoints and logging."""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..data.loader import build_source, train_loader
from ..data.transforms import Augment
from ..families.base import family_of
from ..factory import architecture_metadata
from ..models.rng import seed_rng_states
from ..registry import build
from ..errors import Preempted
from .checkpoint import read_resumable, restore, save_training_checkpoint
from .distributed import init_distributed
from .logger import MetricsLogger
from .optim import AdamW
from .precision import build_loss_scale, cast_compute, resolve_precision
from .preemption import StopSignals
from .train_step import TrainStep


MAX_NAMES_LOGGED = 20  # per epoch in the log; metrics.jsonl lists them all


class TrainingRunner:
    """Builds everything a training run needs from a run config and runs it.

    ``evaluate_fn(model, epoch)`` is called after epochs (per ``runner.eval_interval``) on the
    main rank and its metrics are logged.
    """

    def __init__(self, cfg: Dict, model: Any,
                 evaluate_fn: Optional[Callable[[Any, int], Dict]] = None):
        self.cfg = cfg
        self.model = model
        self.family = family_of(model)
        self.evaluate_fn = evaluate_fn
        self.rank, self.world = init_distributed(cfg["parallel"]["data_parallel"])
        run = cfg["runner"]
        self.batch_size = int(run["batch_size"])
        self.accum = int(run["accumulate_steps"])
        if self.batch_size % self.accum:
            raise ValueError(f"runner.batch_size {self.batch_size} is not divisible by "
                             f"runner.accumulate_steps {self.accum}")
        self.output_dir = cfg["output_dir"]
        self.saved_at: Optional[Tuple[int, int, int]] = None  # (epoch, batch, step) last checkpointed
        self.builder = self.family.build_batch(model, cfg)
        self.source = build_source(cfg["train_dataset"])
        per_rank = len(self.source) // self.world
        self.steps_per_epoch = per_rank // self.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training set has {len(self.source)} samples: fewer than one batch "
                             f"of {self.batch_size} per rank ({self.world} rank(s))")
        self.total_steps = int(run["epochs"]) * self.steps_per_epoch
        if run["max_steps"]:
            self.total_steps = min(self.total_steps, int(run["max_steps"]))

        self.objective = self.family.build_objective(model, cfg, self.rank, self.world)
        for option, method, count in (("lock_image", "lock_image_tower", "lock_image_unlocked_groups"),
                                      ("lock_text", "lock_text_tower", "lock_text_unlocked_layers")):
            if run[option]:
                if not hasattr(model, method):
                    raise ValueError(f"runner.{option}: the {self.family.name!r} family's model "
                                     f"has no {method}()")
                getattr(model, method)(int(run[count]))
        if run["force_patch_dropout"] is not None:
            if not hasattr(model, "set_patch_dropout"):
                raise ValueError(f"runner.force_patch_dropout: the {self.family.name!r} family's "
                                 "model has no set_patch_dropout()")
            model.set_patch_dropout(float(run["force_patch_dropout"]))
        if run["grad_checkpointing"]:
            if not hasattr(model, "set_grad_checkpointing"):
                raise ValueError(f"runner.grad_checkpointing: the {self.family.name!r} family's "
                                 "model has no set_grad_checkpointing()")
            model.set_grad_checkpointing(True)
        # stochastic depth, dropout and patch dropout draw from states the checkpoints hold
        seed_rng_states(model, int(cfg["seed"]), self.rank)
        self.precision = resolve_precision(run["precision"])
        cast_compute(model, self.precision)
        self.loss_scale = build_loss_scale(run, self.precision)
        opt_cfg, lr_cfg = cfg["optimizer"], cfg["lr_schedule"]
        lrs = build("lr_schedule", lr_cfg["type"], base_lr=float(opt_cfg["lr"]),
                    total_steps=self.total_steps, warmup_steps=int(lr_cfg["warmup_steps"]),
                    min_lr=float(lr_cfg["min_lr"]),
                    warmup_start_lr=float(lr_cfg["warmup_start_lr"]))
        if opt_cfg["type"] != "adamw":
            build("optimizer", opt_cfg["type"])  # raises with the valid names
        params = model.trainable_params() + [p for p in self.objective.extra_parameters()
                                             if p.requires_grad]
        self.optimizer = AdamW(params, lrs, weight_decay=float(opt_cfg["weight_decay"]),
                               beta1=float(opt_cfg["beta1"]), beta2=float(opt_cfg["beta2"]),
                               eps=float(opt_cfg["eps"]))
        reducer = None
        if self.world > 1:
            from mindspore import nn

            reducer = nn.DistributedGradReducer(self.optimizer.parameters, mean=True,
                                                degree=self.world)
        self.step_cell = TrainStep(self.objective, self.optimizer, self.accum,
                                   run["clip_grad_norm"], self.loss_scale, reducer)

    def state_parameters(self):
        seen, out = set(), []
        scale = list(self.loss_scale.get_parameters()) if self.loss_scale is not None else []
        for p in list(self.model.get_parameters()) + list(self.optimizer.get_parameters()) \
                + self.objective.extra_parameters() + scale:
            if p.name not in seen:
                seen.add(p.name)
                out.append(p)
        return out

    def _save(self, epoch: int, batch_in_epoch: int, global_step: int) -> None:
        self.saved_at = (epoch, batch_in_epoch, global_step)
        if self.rank != 0:
            return
        state = {"global_step": global_step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                 "seed": self.cfg["seed"], "world_size": self.world,
                 "batch_size": self.batch_size}
        save_training_checkpoint(self.output_dir, self.state_parameters(), state,
                                 keep=int(self.cfg["runner"]["keep_checkpoints"]),
                                 architecture=architecture_metadata(self.family, self.model.config))

    def _resume(self):
        """``(epoch, batch_in_epoch, global_step, notes)`` of the newest checkpoint that
        verifies (all zero without one); ``notes`` name the damaged ones passed over and
        what the chosen one could not restore exactly."""
        path, metadata, skipped = read_resumable(self.output_dir)
        if path is None:
            return 0, 0, 0, [f"--resume: no checkpoint in {self.output_dir}: starting at step 0"]
        state, notes = restore(path, metadata, self.state_parameters())
        for key in ("seed", "world_size", "batch_size"):
            mine = {"seed": self.cfg["seed"], "world_size": self.world, "batch_size": self.batch_size}[key]
            if state.get(key) != mine:
                raise ValueError(f"cannot resume {path}: it was written with {key}={state.get(key)}, "
                                 f"this run has {mine}; the data order would differ")
        return state["epoch"], state["batch_in_epoch"], state["global_step"], skipped + notes

    def _check_skips(self, epoch: int, skipped: int, batches: int, names) -> None:
        """Stop when more than ``train_dataset.max_skip_fraction`` of an epoch's images could
        not be read, rather than train on what is left."""
        bound = float(self.cfg["train_dataset"]["max_skip_fraction"])
        read = skipped + batches * self.batch_size
        if read and skipped / read > bound:
            raise ValueError(f"epoch {epoch}: {skipped} of {read} training images could not be read "
                             f"(more than train_dataset.max_skip_fraction {bound}): "
                             + ", ".join(list(names)[:5]))

    def _check_finite(self, loss: float, step: int, scaling: Dict) -> None:
        """A non-finite loss ends the run, except under a dynamic loss scale still above 1:
        that step was skipped and the scale shrank (AMP's rule); only when it is down to 1
        and steps still overflow is the run diverging."""
        if math.isfinite(loss):
            return
        if scaling and self.loss_scale.dynamic and scaling["amp_scale"] > 1.0:
            return
        raise FloatingPointError(f"loss is {loss} at step {step}"
                                 + (f" with loss scale {scaling['amp_scale']:g}" if scaling else ""))

    def close(self) -> None:
        """Give back the train step's graphs and the optimizer state (the model stays)."""
        self.step_cell.release()
        self.optimizer = None

    def train(self) -> Dict:
        """Run to ``total_steps``; returns a summary (final loss, steps, skipped images)."""
        import mindspore as ms

        run = self.cfg["runner"]
        main = self.rank == 0
        epoch, batch_in_epoch, global_step, notes = (self._resume() if self.cfg.get("resume")
                                                     else (0, 0, 0, []))
        if global_step:  # resumed: that state is on disk
            self.saved_at = (epoch, batch_in_epoch, global_step)
        logger = MetricsLogger(self.output_dir, enabled=main, total_steps=self.total_steps,
                               progress_bar=bool(run["progress_bar"]),
                               log_interval=int(run["log_interval"]))
        for note in notes:
            logger.info(note)
        invalid = getattr(self.source, "invalid", None) or []
        if invalid:  # caption-file lines or shards that could not be read: named once per run
            logger.write({"type": "dataset", "invalid_records": len(invalid), "invalid": invalid})
            logger.info(f"skipped {len(invalid)} unreadable record(s) of the training data: "
                        + "; ".join(invalid[:MAX_NAMES_LOGGED])
                        + (" (all in metrics.jsonl)" if len(invalid) > MAX_NAMES_LOGGED else ""))
        purged = logger.purge_after(global_step, epoch) if self.cfg.get("resume") else 0
        if global_step or purged:
            logger.info(f"resumed from step {global_step} (epoch {epoch}, batch {batch_in_epoch})"
                        + (f"; {purged} record(s) past it dropped from metrics.jsonl" if purged else ""))
        logger.start_at(global_step)
        self.model.set_train(True)
        augment = Augment.from_config(self.cfg["train_dataset"]["augment"])
        last_loss, skipped_total, samples = float("nan"), 0, 0
        save_interval = int(run["save_interval"] or 0)
        epochs = int(run["epochs"])
        with StopSignals(self.world) as signals:
            while global_step < self.total_steps and epoch < epochs:
                loader = train_loader(self.source, self.builder, self.model.image_size,
                                      self.batch_size, epoch=epoch, seed=int(self.cfg["seed"]),
                                      rank=self.rank, world=self.world, augment=augment,
                                      shuffle=bool(self.cfg["train_dataset"]["shuffle"]),
                                      num_workers=int(self.cfg["train_dataset"]["num_workers"]),
                                      preprocess=self.model.preprocess,
                                      skip_batches=batch_in_epoch)
                finished_early = False
                for batch in loader:
                    # the Tensors share the batch's arrays (a loader's batch is fresh memory)
                    inputs = (ms.Tensor.from_numpy(np.ascontiguousarray(x)) for x in batch)
                    loss, terms, lr, scale = self.step_cell(*inputs)
                    global_step += 1
                    batch_in_epoch += 1
                    samples += len(batch[0]) * self.world
                    last_loss = float(loss.asnumpy())
                    scaling = self.loss_scale.state() if self.loss_scale is not None else {}
                    self._check_finite(last_loss, global_step, scaling)
                    named = {name: float(t.asnumpy()) for name, t in zip(self.objective.term_names, terms)}
                    logger.step(global_step, epoch, last_loss, float(lr.asnumpy()),
                                float(scale.asnumpy()), samples, named, scaling)
                    saved = save_interval and global_step % save_interval == 0
                    if saved:
                        self._save(epoch, batch_in_epoch, global_step)
                    stop = signals.requested()
                    if stop:  # the step is done: checkpoint it, then let the scheduler requeue
                        if not saved:
                            self._save(epoch, batch_in_epoch, global_step)
                        signals.barrier()
                        logger.info(f"stopped by {stop} at step {global_step}; resume with --resume")
                        logger.close()
                        raise Preempted(stop, global_step)
                    if global_step >= self.total_steps:
                        finished_early = batch_in_epoch < self.steps_per_epoch
                        break
                # An epoch ends when its loader is exhausted (skipped images can shorten it).
                epoch_done = not finished_early
                if epoch_done:
                    loader.drain()  # the rest is at most a partial batch: counts become exact
                skipped, names = loader.skipped, loader.unreadable
                skipped_total += skipped
                if skipped:
                    unnamed = skipped - len(names)
                    logger.info(f"epoch {epoch}: skipped {skipped} unreadable image(s): "
                                + ", ".join(names[:MAX_NAMES_LOGGED])
                                + (f" (+{len(names) - MAX_NAMES_LOGGED} more in metrics.jsonl)"
                                   if len(names) > MAX_NAMES_LOGGED else "")
                                + (f"; {unnamed} failed to decode" if unnamed > 0 else ""))
                self._check_skips(epoch, skipped, batch_in_epoch, names)
                if epoch_done:
                    logger.write({"type": "epoch", "epoch": epoch, "skipped_images": skipped,
                                  "unreadable": names})
                    epoch, batch_in_epoch = epoch + 1, 0
                    interval = int(run["eval_interval"] or 0)
                    if main and self.evaluate_fn is not None and interval and epoch % interval == 0:
                        metrics = self.evaluate_fn(self.model, epoch)
                        self.model.set_train(True)
                        logger.write({"type": "eval", "epoch": epoch, "step": global_step, **metrics})
                        headline = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
                        if "retrieval" in metrics:
                            headline["retrieval_mean_recall"] = metrics["retrieval"]["mean_recall"]
                        logger.info(f"eval after epoch {epoch}: " + json.dumps(headline))
        # A run whose last step fell on save_interval has that state on disk already (written
        # twice before: 7.7 s and 1.7 GB more for ViT-B-32 on a 2-core CPU)
        if self.saved_at != (epoch, batch_in_epoch, global_step):
            self._save(epoch, batch_in_epoch, global_step)
        logger.close()
        self.model.set_train(False)
        return {"final_loss": last_loss, "global_step": global_step, "epochs": epoch,
                "skipped_images": skipped_total, "rank": self.rank, "world_size": self.world}
