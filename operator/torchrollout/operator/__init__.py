"""The Kubernetes operator: kopf handlers over a reconciler that gathers, decides, applies.

`handlers` registers with kopf and holds no logic; `reconcile` reads the cluster, calls
the engine, applies the renderers' plan through a router and writes the status;
`cluster` is the one module that talks to the Kubernetes API.
"""
