"""featvis's own methods, registered (on import) in the order a run shows them."""

from .combination import COMBINATION
from .deconvolution import DECONVNET
from .examples import EXAMPLES
from .first_layer import FILTER_VIEWS
from .filters import FILTERS
from .maximization import MAXIMIZE
from .registry import register
from .sampling import SAMPLING
from .statistics import STATISTICS

BUILTINS = (EXAMPLES, STATISTICS, MAXIMIZE, SAMPLING, FILTERS, FILTER_VIEWS, DECONVNET,
            COMBINATION)
for _method in BUILTINS:
    register(_method)
