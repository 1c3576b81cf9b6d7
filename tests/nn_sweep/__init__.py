"""Cases and references of the torch.nn sweep (tests/test_hessian_core/test_torch_nn_sweep.py)."""
