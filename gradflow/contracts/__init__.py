"""Layer 1, the contracts: what a plugin implements and the pieces it is built from.

``backend`` (array namespaces and dtypes), ``random`` (the counter-based generator), ``layout``
(the flat θ and its named views), ``blocking`` (cache-blocked passes), ``model``, ``estimator``
(with its declared state, ``state``), ``task``, ``logger``, ``losses``, ``readout`` (the affine
readout building block) and ``errors`` (every exception gradflow raises). Nothing here imports
another layer.
"""
