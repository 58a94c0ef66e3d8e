"""Deployment tooling (composition layer).

:mod:`tinyfed.deploy.cli` is ``tinyfed broker credentials``: the accounts of the deployed
Mosquitto (``docker-compose.yml``, ``deploy/mosquitto/``).
"""
