"""Shared test settings."""

import e3nn

# opt_einsum path optimisation makes each e3nn module take seconds to build and
# changes no result; tests build many small models, so skip it here.
e3nn.set_optimization_defaults(optimize_einsums=False)
