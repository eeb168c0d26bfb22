"""Deployment helpers of the chat hub: a local cluster without Docker (``deploy.cluster``).

A package so the tests can ``import deploy.cluster`` from the repository root; the
module also runs as a script (``python deploy/cluster.py up``). Not installed with the
hub: it manages processes on a developer's or CI machine, it is not part of a worker.
"""
