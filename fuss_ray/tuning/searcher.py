"""Ray Tune's OptunaSearch, made safe to resume after the search process was killed.

Tune saves its experiment state every few seconds; a search killed between a trial's end
and the next save comes back believing that trial still runs, and starts it again. The
trial itself then replays its stored result (see `search._trainable`), but Optuna's study,
which already holds the finished trial, refuses every report to it. Those reports carry
nothing new, so they are dropped here instead of failing the whole search.
"""

from __future__ import annotations

import logging
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch that ignores reports to trials its study has already closed."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            log.debug("trial %s replayed a result Optuna already holds", trial_id)
