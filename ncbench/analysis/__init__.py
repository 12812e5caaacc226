"""Does collapse predict accuracy and robustness? Statistics across the models of a results frame.

Rank correlations (:func:`kendall`), Jiang et al.'s granulated Kendall (:func:`granulated_kendall`), the PGDL
competition's conditional-mutual-information score (:func:`pgdl_score`, oriented by the sign of tau), and
:func:`regress`, which gathers these into one table per target x predictor with what makes them citable: Psi's
intervals over the grid's lines, paired margins over the best baseline, p-values corrected over every
comparison, Dziugaite et al.'s robust sign-error, partial Spearman given clean accuracy, predictor families
(the test-label family described, never ranked), and targets or designs too small or too noisy to rank said so
(docs/statistics.md). :func:`write_regression`, :func:`draw_figures` and :func:`write_measures_board` turn the
table into files. The input is a frame shaped as docs/records.md ("the frame") says.
"""

from ._board import render_measures_board, write_measures_board
from ._figures import draw_figures
from ._pgdl import pgdl_score
from ._rank import granulated_kendall, kendall
from ._regress import regress
from ._tables import format_ranking, write_regression

__all__ = [
    "draw_figures", "format_ranking", "granulated_kendall", "kendall", "pgdl_score", "regress",
    "render_measures_board", "write_measures_board", "write_regression",
]
