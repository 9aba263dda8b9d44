// acttail.cu: the one translation unit the fatbin is built from (nvcc
// -fatbin takes one input). Each included file documents its kernels.
#include "norm.cu"
#include "elementwise.cu"
#include "convert.cu"
#include "matvec.cu"
#include "sparse.cu"
#include "attention.cu"
#include "sample.cu"
