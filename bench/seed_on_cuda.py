"""Run the article's train.py on a CUDA machine, with the one fix its GPU path needs.

The article's `split_data` draws its permutation on the CPU (`torch.randperm(n)`) and indexes
tensors that `train.py` has already moved to the GPU with it, which raises "Expected all tensors
to be on the same device" on any CUDA machine. This launcher moves that index to the data's
device and changes nothing else, so the article's training loop is what gets timed.

    cd SEED_CODE && python /path/to/bench/seed_on_cuda.py train.py --model_fn m.pth --gpu_id 0 ...
"""

import runpy
import sys
from pathlib import Path

import torch

_index_select = torch.index_select


def index_select(input, dim, index, **kwargs):
    return _index_select(input, dim, index.to(input.device), **kwargs)


torch.index_select = index_select
script = Path(sys.argv[1]).resolve()
sys.argv = sys.argv[1:]
sys.path.insert(0, str(script.parent))
runpy.run_path(str(script), run_name="__main__")
