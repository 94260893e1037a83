"""The computer-vision particle-flow study (Di Bello et al., EPJC 81 (2021) 107)."""
