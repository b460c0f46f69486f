"""NaN / infinite voxels of NIfTI files, read from the stored voxel data.

ITK's NIfTI reader (SimpleITK 2.5, the reader nnU-Net's plans use by default) returns NaN and infinite voxels of a
``.nii`` / ``.nii.gz`` as 0, so a check of the array it returns never sees them. nibabel (an nnU-Net dependency)
returns the stored values unchanged.
"""
import nibabel
import numpy as np

NIFTI_ENDINGS = (".nii", ".nii.gz")


def nifti_has_non_finite(path: str) -> bool:
    """True when ``path`` is a NIfTI file of a floating-point data type with a NaN or infinite stored voxel. Other
    formats, integer data types (which cannot hold them) and files nibabel cannot open (their reader reports
    those) give False."""
    path = str(path)
    if not path.endswith(NIFTI_ENDINGS):
        return False
    try:
        image = nibabel.load(path)
        if image.get_data_dtype().kind not in "fc":
            return False
        return not np.isfinite(image.dataobj.get_unscaled()).all()
    except Exception:  # unreadable here: the plans' reader names the file and the reason
        return False
