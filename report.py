"""Write report.md and plots for a sweep: `python report.py outputs/multirun/<sweep>`."""

from gan_lightning.report import main

if __name__ == "__main__":
    main()
