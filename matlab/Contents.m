% hessiancore: exact second-order information of dlnetwork losses (Hessians, spectra, Newton steps)
% Version 0.1.0 (MATLAB R2021a or later with Deep Learning Toolbox; GNU Octave 7 for the tests)
%
% Curvature of a dlnetwork's loss, in net.Learnables order: Python computes in float64, or MATLAB itself
% with 'ModelLoss', @(net, X, T) ... (your own loss) or 'Backend', 'matlab' (MATLAB's loss functions)
%   dlhessian         - Exact Hessian with respect to the learnable parameters
%   dlhvp             - Hessian-vector product, without forming the Hessian
%   dlhessianDiag     - Exact diagonal of the Hessian (not an estimate)
%   dlhessianEigs     - Extreme eigenvalues and eigenvectors, with residuals
%   dlhessianTrace    - Trace of the Hessian, estimated from Hessian-vector products
%   dlnewtonUpdate    - One damped Newton step on the learnable parameters
%   dlhessianPlan     - Which computation each of these takes for a network, and why
%
% Exchange with Python
%   dlnetworkToSpec   - Describe a dlnetwork as the plain struct the Python bridge reads
%   updateLearnables  - Write new learnable values into a dlnetwork
%   hcFallbackHvp     - Hessian-vector product by dlgradient (driven from Python)
%
% Set-up
%   hessiancoreSetup  - Check and configure the Python environment
%
% Options of every curvature function: help dlhessian. Python side: python -m bridge.matlab_path
% prints this folder; docs/matlab.md in the hessiancore repository is the full guide.
