"""The visualization methods; each works on all (or some) units of a layer at once."""

from .combination import Combination, linear_combination
from .deconvolution import Projections, deconvnet
from .examples import TopExamples, top_examples
from .filters import RankedFilters, ranked_filters
from .maximization import Maximization, maximize
from .parameterization import fit_color_decorrelation
from .sampling import UnitSamples, sample_unit

__all__ = ["top_examples", "TopExamples", "maximize", "Maximization", "sample_unit",
           "UnitSamples", "ranked_filters", "RankedFilters", "linear_combination", "Combination",
           "deconvnet", "Projections", "fit_color_decorrelation"]
