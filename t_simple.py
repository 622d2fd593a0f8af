import time, warnings, resource
import numpy as np
import hlm_jax as hj
d = hj.datasets.load("insteval")
t = time.time()
m = hj.lmer("y ~ service + d + (1 | dept)", d)
print("fit", time.time() - t, m.objective, m.sigma**2, m.theta, m.opt)
print(m.fixef.iloc[:6], m.std_errors.iloc[:3])
print("maxrss MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
