"""Campaigns: the (model x system) matrix as independent jobs.

- :mod:`.jobs`: the job list, per-pair state and the task one job runs (run, then score);
- :mod:`.spec`: :class:`CampaignSpec`, what a campaign asks for, checked once;
- :mod:`.run`: planning, the local executor and waiting on SLURM;
- :mod:`.summary`: the live summary and per-pair timings;
- :mod:`.slurm`: the sbatch script (templates in ``dynamat/templates/``), submission, squeue;
- :mod:`.bridge`: the relay that puts a driver behind an inet socket on another node.
"""

from dynamat.campaign.run import CampaignResult, run_campaign
from dynamat.campaign.spec import CampaignSpec
from dynamat.campaign.summary import pair_timings

__all__ = ["CampaignResult", "CampaignSpec", "pair_timings", "run_campaign"]
