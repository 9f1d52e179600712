"""Model performance: labelled predictions' metrics per window, against the reference's, from sufficient
statistics that merge across partitions."""
