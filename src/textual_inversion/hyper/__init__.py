"""HyperDreamBooth (Ruiz et al. 2023): LiDB weights, their pre-optimisation, and the hypernetwork predicting them.

`lidb.py` is the rank-1 layer, `lidb_file.py` its files, `network.py` the hypernetwork,
`identities.py` the miniworld identities it learns from, `preoptimize.py` and `train.py` its build.
"""
