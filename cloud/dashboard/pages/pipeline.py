from fleetsim.cloud.dashboard.ui import context
from fleetsim.cloud.dashboard.views.pipeline import render

render(context())
