from cri_exporter.cli import main

main(prog_name="cri-exporter")
