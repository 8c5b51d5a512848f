"""featvis's own methods, in the order a run shows them."""

from .combination import COMBINATION
from .deconvolution import DECONVNET
from .examples import EXAMPLES
from .first_layer import FILTER_VIEWS
from .filters import FILTERS
from .maximization import MAXIMIZE
from .sampling import SAMPLING

BUILTINS = (EXAMPLES, MAXIMIZE, SAMPLING, FILTERS, FILTER_VIEWS, DECONVNET, COMBINATION)
