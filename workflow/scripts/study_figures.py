"""One study's figures as PNG files for `snakemake --report` (the rule study_figures).

The same figures as the report page's (reglab.plots, the variants reglab.report.figure_variants
picks): the learning curves and the final-accuracy distribution over seeds.
"""

import pandas as pd

from reglab import contract, plots
from reglab.report import figure_variants

sm = snakemake  # noqa: F821 (set by Snakemake's script directive)
config, _ = contract.read_validated_config(sm.input.config)
study = config["studies"][sm.wildcards.study]
variants = figure_variants(study)
colors = plots.variant_colors(variants)
figures = {
    "learning_curves": plots.fig_learning_curves(
        pd.read_csv(sm.input.curves), variants, colors
    ),
    "final_accuracy": plots.fig_final_distribution(
        pd.read_csv(sm.input.per_seed), variants, colors
    ),
}
for name, figure in figures.items():
    contract.atomic_write(
        sm.output[name], lambda fh: figure.savefig(fh, format="png", dpi=plots.DPI)
    )
contract.write_text(
    f"{len(figures)} figures of {len(variants)} variants\n", sm.log[0]
)
