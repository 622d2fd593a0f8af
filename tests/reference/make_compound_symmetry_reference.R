# Reference for the compound-symmetry covariance structure (tests/test_covariance.py): nlme's
# pdCompSymm on Machines (Pinheiro & Bates 2000, section 1.3): score ~ Machine, random = list(Worker =
# pdCompSymm(~ 0 + Machine)): one variance and one correlation shared by the three machines' effects.
# Run from the repository root:  Rscript tests/reference/make_compound_symmetry_reference.R
# Writes tests/reference/machines_compsymm_nlme.json (the data included).
suppressMessages({library(nlme); library(jsonlite)})

fit_summary <- function(method) {
  m <- lme(score ~ Machine, data = Machines, random = list(Worker = pdCompSymm(~ 0 + Machine)), method = method,
           control = lmeControl(tolerance = 1e-10, msTol = 1e-12, niterEM = 100, msMaxIter = 500))
  vc <- as.matrix(m$modelStruct$reStruct$Worker) * m$sigma^2
  list(method = method, fixef = unname(fixef(m)), fixef_names = names(fixef(m)),
       sd = sqrt(vc[1, 1]), cor = vc[1, 2] / vc[1, 1], sigma = m$sigma, logLik = as.numeric(logLik(m)),
       vcov = unname(as.matrix(vcov(m))))
}

d <- as.data.frame(Machines)
out <- list(id = "machines_compsymm_nlme", engine = paste("nlme", packageVersion("nlme")),
            formula_nlme = "lme(score ~ Machine, random = list(Worker = pdCompSymm(~ 0 + Machine)))",
            data = list(score = d$score, Worker = as.character(d$Worker), Machine = as.character(d$Machine)),
            REML = fit_summary("REML"), ML = fit_summary("ML"))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/reference/machines_compsymm_nlme.json")
