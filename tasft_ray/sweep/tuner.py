"""One Tune run of a config's space in a storage folder: a new Tuner, or the saved one
restored. Each trial is :func:`run_trial` (a function that fits its own TorchTrainer: Ray
2.60's Train V2 cannot be wrapped by a Tuner directly)."""

from __future__ import annotations

import logging

from ray import tune

from tasft_ray.config import Config
from tasft_ray.storage import Location
from tasft_ray.sweep import interrupt
from tasft_ray.sweep.space import param_space, scheduler, search_alg, tune_metric
from tasft_ray.sweep.trial import run_trial

log = logging.getLogger(__name__)


def fit(
    cfg: Config,
    where: Location,
    uri: str,
    parent: str,
    prepared,
    restore: bool,
    search: dict | None = None,
):
    """Tune's ResultGrid of ``cfg``'s space run in folder ``where`` (restored when it can be);
    ``interrupt.stopped()`` tells afterwards whether a user stopped it."""
    trainable = tune.with_parameters(
        run_trial,
        base=cfg.model_dump(mode="json"),
        sweep=where,
        mlflow={"uri": uri, "parent_run_id": parent},
        prepared=prepared,
        search=search,
    )
    interrupt.reset()
    fs = {} if where.local else {"storage_filesystem": where.fs}
    if restore and tune.Tuner.can_restore(where.path, **fs):
        tuner = tune.Tuner.restore(
            where.path, trainable=trainable, resume_unfinished=True, resume_errored=True, **fs
        )
    else:  # new, or killed before Tune saved any state: (re)start it in its folder
        if restore:
            log.info("%s has no Tune state yet: starting the sweep over in it", where.uri)
        metric, mode = tune_metric(cfg.sweep)
        one = not isinstance(metric, list)  # a Pareto search gives its metrics to its searcher
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(cfg.sweep),
            tune_config=tune.TuneConfig(
                metric=metric if one else None,
                mode=mode if one else None,
                num_samples=cfg.sweep.num_samples,
                search_alg=search_alg(cfg.sweep, cfg.train.seed),  # holds the concurrency
                scheduler=scheduler(cfg),
            ),
            run_config=tune.RunConfig(
                name=where.name, callbacks=[interrupt.StopWatch()], **where.parent().ray_storage()
            ),
        )
    tune_log = logging.getLogger("ray.tune.tune")
    tune_log.addFilter(_tune_resume_hint)
    try:
        with interrupt.sigterm_stops_tune():
            return tuner.fit()
    finally:
        tune_log.removeFilter(_tune_resume_hint)


def _tune_resume_hint(record: logging.LogRecord) -> bool:
    """Drops Tune's own lines on a stopped sweep, "Trials did not complete: [...]" and "Resume
    experiment with: Tuner.restore(...)": the Python API's way back, which a user of the CLI
    cannot take. The CLI lists the unfinished trials and the --resume command itself."""
    lines = ("Trials did not complete", "Experiment has been interrupted")
    return not (interrupt.stopped() and record.getMessage().startswith(lines))
