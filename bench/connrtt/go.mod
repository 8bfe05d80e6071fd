module twoway.bench/connrtt

go 1.26
