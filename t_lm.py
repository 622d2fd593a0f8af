import time, warnings
import hlm_jax as hj
from hlm_jax.ols import lm
d = hj.datasets.load("insteval")
for f in ["y ~ d", "y ~ service + dept + d", "y ~ service + dept + d + service:d"]:
    t = time.time(); m = lm(f, d); print(time.time() - t)
    print(m.summary(8))
