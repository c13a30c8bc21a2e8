"""The paper's experiment grid and its report: the library behind ``python -m trainers.reproduce``.

- :mod:`~evae_tf.experiments.cells`: the grid's cells and the state of their run directories;
- :mod:`~evae_tf.experiments.runner`: :func:`reproduce`, which trains, evaluates and reports;
- :mod:`~evae_tf.experiments.tables`: the paper's published numbers (Tables 1 and 2);
- :mod:`~evae_tf.experiments.events`: validation curves from TensorBoard event files;
- :mod:`~evae_tf.experiments.report`: ``report.md`` and the CSV files;
- :mod:`~evae_tf.experiments.figures`: the report's PNG figures (matplotlib).
"""

from evae_tf.experiments.cells import (
    TIMING_FILE,
    Cell,
    CellResult,
    grid,
    is_trained,
    needs_evaluation,
)
from evae_tf.experiments.events import VALIDATION_TAG, validation_curve
from evae_tf.experiments.figures import (
    FIGURE_IMAGES,
    MODEL_COLORS,
    color_for,
    image_panels,
    line_chart,
    report_figures,
    save_png,
)
from evae_tf.experiments.report import CSV_COLUMNS, FIGURE_CAPTIONS, write_report
from evae_tf.experiments.runner import ReproduceResult, reproduce
from evae_tf.experiments.tables import (
    DATASET_TITLES,
    MODEL_TITLES,
    PAPER_RESULTS,
    TABLE_MODELS,
)

__all__ = [
    "CSV_COLUMNS",
    "DATASET_TITLES",
    "FIGURE_CAPTIONS",
    "FIGURE_IMAGES",
    "MODEL_COLORS",
    "MODEL_TITLES",
    "PAPER_RESULTS",
    "TABLE_MODELS",
    "TIMING_FILE",
    "VALIDATION_TAG",
    "Cell",
    "CellResult",
    "ReproduceResult",
    "color_for",
    "grid",
    "image_panels",
    "is_trained",
    "line_chart",
    "needs_evaluation",
    "report_figures",
    "reproduce",
    "save_png",
    "validation_curve",
    "write_report",
]
