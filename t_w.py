import time, warnings, resource, sys
import numpy as np
import hlm_jax as hj
warnings.simplefilter("ignore")
d = hj.datasets.load("insteval")
for f in sys.argv[1:]:
    t = time.time()
    m = hj.lmer(f, d)
    print(f, "fit", time.time() - t, m.objective, m.sigma**2, m.theta, m.opt)
    print(m.fixef.iloc[:3].to_dict(), m.std_errors.iloc[:3].to_dict())
print("maxrss MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
