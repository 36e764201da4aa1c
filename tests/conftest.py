import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Workers run with one torch thread; tests do too, so numbers match the stored runs."""
    torch.set_num_threads(1)
