"""Post-processing of label maps (tensors in, tensor out).

* :func:`largest_component_per_class`: keep the largest connected component per class; BCP's teacher pseudo-labels
  (Bai et al., CVPR 2023, Sec. 3.3 / reference code).
"""
import numpy as np
import torch
from scipy import ndimage


def largest_component_per_class(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per image and foreground class, keep the largest connected component (full connectivity); removed voxels
    become background 0. ``labels`` ``(B, 1, *spatial)`` integer-valued."""
    out = labels.detach().cpu().numpy().copy()
    structure = None
    for b in range(out.shape[0]):
        image = out[b, 0]
        if structure is None:
            structure = ndimage.generate_binary_structure(image.ndim, image.ndim)
        for c in range(1, num_classes):
            components, n = ndimage.label(image == c, structure)
            if n > 1:
                sizes = np.bincount(components.ravel())[1:]
                image[(components > 0) & (components != 1 + int(np.argmax(sizes)))] = 0
    return torch.from_numpy(out).to(labels.device)
