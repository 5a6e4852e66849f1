"""A run's training curves as TensorBoard event files (`train`/`bench --tensorboard DIR`,
the API's `train`/`bench(tensorboard=DIR)`).

The optional extra `pip install 'gslbench[tensorboard]'` provides the writer. The curves come from
the run's train_log.csv (`gslbench.methods.loop`), after training, into DIR/RUN (`layout.curves_dir`):
per epoch `loss/similarity`, and at each codebook refit `quantization/mse` (the error under the
codebooks the method trained against, from the second refit on) and `quantization/mse_refit`
(under the codebooks just refitted). The training loop measures no mAP while it trains, so there
is none to log: the run's evaluated mAP is in metrics.json. A text entry `source` records the run
and the sha256 of the train_log.csv the curves were read from.
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

from gslbench import layout
from gslbench.errors import GslbenchError
from gslbench.storage import sha256_file

# train_log.csv column -> TensorBoard tag
TAGS = {"sim_loss": "loss/similarity", "quant_mse": "quantization/mse",
        "quant_mse_refit": "quantization/mse_refit"}


def check_writer(option: str = "--tensorboard") -> None:
    """A user error naming `option` (the CLI's --tensorboard, the API's tensorboard) when the
    extra is not installed (checked before any training, so a missing extra costs nothing)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise GslbenchError(f"{option}: the tensorboard package is not installed "
                            "(pip install 'gslbench[tensorboard]')") from None


def write_curves(run: layout.RunDir, root: str | Path) -> Path:
    """Write `run`'s curves (module docstring) into ROOT/RUN, replacing what an earlier call
    wrote there; return that folder. Each scalar's step is the epoch (int, from 1)."""
    from torch.utils.tensorboard import SummaryWriter

    with run.train_log.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not set(TAGS) <= set(rows[0]):
        raise GslbenchError(f"{run.train_log}: expected the columns {', '.join(TAGS)}")
    out = layout.curves_dir(root, run.run_id)
    shutil.rmtree(out, ignore_errors=True)
    with SummaryWriter(log_dir=str(out)) as writer:
        for row in rows:
            for column, tag in TAGS.items():
                value = float(row[column]) if row[column] else math.nan
                if math.isfinite(value):
                    writer.add_scalar(tag, value, int(row["epoch"]))
        writer.add_text("source", f"run {run.run_id}, train_log.csv sha256 "
                                  f"{sha256_file(run.train_log)}")
    return out
