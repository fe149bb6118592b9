"""The offline build of the HyperDreamBooth hypernetwork bundled for miniworld (miniworld/hypernetwork/).

`identities.py` lists the miniworld identities it learns from, `preoptimize.py` fits their LiDB weights,
`train.py` trains the hypernetwork on them. What predicts at run time lives in `methods/`
(`hypernetwork.py`, `lidb_layers.py`, `lidb_file.py`); nothing there imports this package.
"""
