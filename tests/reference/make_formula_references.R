# References for tests/test_formula.py: R's model.matrix (column names and values) and lme4 fits
# for formulas with factors, interactions, transforms and non-syntactic column names.
# Run from the repository root:  Rscript tests/reference/make_formula_references.R
# Writes tests/reference/formula_matrices.json (the data are made here and stored in the JSON).
suppressMessages({library(lme4); library(jsonlite)})

set.seed(7)
n <- 30
d <- data.frame(x = round(rnorm(n), 3), z = round(runif(n, 0.5, 3), 3),
                f = sample(c("lo", "mid", "hi"), n, replace = TRUE),
                g = rep(c("a", "b"), length.out = n),
                k = sample(c(2L, 10L, 7L), n, replace = TRUE),
                b = rep(c(TRUE, FALSE, FALSE), length.out = n),
                check.names = FALSE, stringsAsFactors = FALSE)
d[["a b"]] <- round(rnorm(n), 3)
d[["x.dot"]] <- round(rnorm(n), 3)
d[["größe"]] <- round(rnorm(n), 3)

rhs <- c("~ x", "~ x * f", "~ f * g", "~ 0 + f", "~ 0 + f + g", "~ 0 + x:f", "~ x:f", "~ f:g", "~ f/x",
         "~ (x + f + g)^2", "~ I(x^2) + log(z) + sqrt(z) + exp(x) + abs(x) + log1p(z)", "~ poly(x, 3)",
         "~ poly(x, 2):f", "~ scale(x)", "~ factor(k)", "~ x - 1", "~ b", "~ `a b` + x.dot + `größe`",
         "~ I(x * z) + I(-x) + I((x + 1)^2) + I(2 * x - z/4)", "~ x + f - 1 + g", "~ poly(x, 2, raw = TRUE)",
         "~ g:x + x:f", "~ f*g - g", "~ factor(g, levels = c(\"b\", \"a\")) + x")
matrices <- lapply(rhs, function(r) {
  X <- model.matrix(as.formula(r), d)
  list(rhs = r, names = colnames(X), X = unname(X))
})

# lme4: a fit with a factor, a transform and a non-syntactic name in both parts
d$y <- round(1 + d$x + 0.5 * (d$f == "hi") + rnorm(n) + rep(rnorm(6), each = 5), 3)
d$grp <- rep(paste0("s", 1:6), each = 5)
fit_formula <- "y ~ f + log(z) + `a b` + (1 + `a b` | grp)"
m <- lmer(as.formula(fit_formula), d, REML = TRUE)
fit <- list(formula = fit_formula, fixef = as.list(fixef(m)), objective = unname(REMLcrit(m)),
            theta = unname(getME(m, "theta")))

write_json(list(id = "formula_matrices", engine = R.version.string, data = d, matrices = matrices, fit = fit),
           "tests/reference/formula_matrices.json", digits = NA, auto_unbox = TRUE, pretty = FALSE)
