from fleetsim.cloud.dashboard.ui import context
from fleetsim.cloud.dashboard.views.experiments import render

render(context())
