// placeholder: kernels of this family are not written yet
