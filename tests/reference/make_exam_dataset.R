# Export mlmRev's Exam (London schools, Goldstein et al. 1993) as hlm_jax/datasets/data/exam.csv.gz.
# Run from the repository root:  Rscript tests/reference/make_exam_dataset.R
# Made with R 4.2.2, mlmRev 1.0.8. Factors are written as their labels (school, student as numbers).
library(mlmRev)
data(Exam)
out <- data.frame(
  school   = as.integer(as.character(Exam$school)),
  student  = as.integer(as.character(Exam$student)),
  normexam = Exam$normexam,
  standLRT = Exam$standLRT,
  schavg   = Exam$schavg,
  schgend  = as.character(Exam$schgend),
  vr       = as.character(Exam$vr),
  intake   = as.character(Exam$intake),
  sex      = as.character(Exam$sex),
  type     = as.character(Exam$type)
)
con <- gzfile("hlm_jax/datasets/data/exam.csv.gz", "w")
write.csv(out, con, row.names = FALSE)
close(con)
