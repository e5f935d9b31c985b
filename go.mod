module github.com/seqshiftd/seqshiftd

go 1.26
