"""Map-style torch Datasets: item i is a 1 x size x size image of a circle (label 0) or a
square (label 1) on noise, drawn from (seed, i) alone, so any process reads the same item.

``ShapesDataset`` gives ``(image, label)`` pairs; ``ShapeFields`` gives the same shapes as
dicts of named fields (the image, the shape's radius as a second model input, its centre as a
second target), which the framework batches as dicts (see shapes/tasks.py)."""

import torch
from torch.utils.data import Dataset


class ShapesDataset(Dataset):
    classes = ["circle", "square"]

    def __init__(self, length: int = 512, size: int = 16, seed: int = 0) -> None:
        self.length, self.size, self.seed = length, size, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label, _, _ = self.draw(index)
        return image, label

    def draw(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor, float]:
        """The image, its label, the shape's centre (y, x) and its radius, both / size."""
        if not 0 <= index < self.length:
            raise IndexError(index)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        label = index % 2
        n = self.size
        image = 0.3 * torch.rand(1, n, n, generator=g)
        cy, cx = (torch.randint(n // 4, 3 * n // 4, (2,), generator=g)).tolist()
        r = int(torch.randint(n // 6, n // 4 + 1, (1,), generator=g))
        yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        if label == 0:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            inside = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)
        image[0][inside] += 0.7
        return image, label, torch.tensor([cy / n, cx / n]), r / n


class ShapeFields(ShapesDataset):
    """Item i as ``{"image", "radius", "label"}`` (and ``"center"``, the shape's centre, with
    ``center=True``): a dict batch for a model of two inputs (see shapes/model.py)."""

    def __init__(self, length: int = 512, size: int = 16, seed: int = 0,
                 center: bool = False) -> None:
        super().__init__(length, size, seed)
        self.center = center

    def __getitem__(self, index: int) -> dict:
        image, label, centre, radius = self.draw(index)
        item = {"image": image, "radius": torch.tensor([radius]), "label": label}
        if self.center:
            item["center"] = centre
        return item
