"""The visualization methods; each works on all (or some) units of a layer at once, and each
module ends in its :class:`Method` value, which the registry holds (:func:`register` adds a
user's method beside them)."""

from .builtin import BUILTINS
from .combination import Combination, linear_combination
from .deconvolution import Projections, deconvnet
from .examples import TopExamples, top_examples
from .first_layer import FilterViews, filter_views
from .filters import RankedFilters, ranked_filters
from .maximization import Maximization, maximize
from .parameterization import fit_color_decorrelation
from .registry import CONTEXT, SANITY, Method, Page, method, register, registered
from .sampling import UnitSamples, sample_unit
from .running_statistics import UnitStatistics
from .statistics import unit_statistics

__all__ = ["top_examples", "TopExamples", "maximize", "Maximization", "sample_unit",
           "UnitSamples", "ranked_filters", "RankedFilters", "linear_combination", "Combination",
           "deconvnet", "Projections", "filter_views", "FilterViews", "fit_color_decorrelation",
           "Method", "Page", "register", "registered", "method", "CONTEXT", "SANITY", "BUILTINS",
           "unit_statistics", "UnitStatistics"]
