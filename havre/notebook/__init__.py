"""What Havre adds to the notebook image's server process (not the kernels).

`singleuser` is the image's entry point, `havre-singleuser`: JupyterHub's single-user server
without the hub's database layer. Imports nothing else of Havre.
"""
